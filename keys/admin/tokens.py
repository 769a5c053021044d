"""Staff admin for REST API tokens: create one for a user, revoke."""

from django import forms
from django.contrib import admin, messages
from django.contrib.auth.base_user import AbstractBaseUser as User
from django.core.exceptions import ValidationError
from django.db.models import QuerySet
from django.http import HttpRequest
from django.utils.translation import gettext_lazy as _
from django.utils.translation import ngettext

from keys import services
from keys.models import ApiToken
from keys.services import IssuedApiToken

from .actions import RefuseForbiddenActionsMixin
from .forms import _add_service_errors
from .issued import ISSUED_TOKEN_TEMPLATE, ShowIssuedSecretOnceMixin
from .transactions import ServiceTransactionsMixin

_TOKEN_NAME_MESSAGES = ApiToken._meta.get_field("name").error_messages


class ApiTokenAdminForm(forms.ModelForm):
    """A new token for a user. As with keys, _post_clean runs the service's validation, which
    writes nothing, so staff see its exact messages; save_model then calls the service."""

    class Meta:
        model = ApiToken
        fields = ("user", "name")
        error_messages = {
            "name": {
                "required": _TOKEN_NAME_MESSAGES["blank"],
                "max_length": _TOKEN_NAME_MESSAGES["max_length"],
            }
        }

    def _post_clean(self) -> None:
        if self.errors:
            return
        try:
            services.api_token_validate(
                user=self.cleaned_data["user"], name=self.cleaned_data["name"]
            )
        except ValidationError as error:
            _add_service_errors(self, error)

    def create_token(self, *, actor: User | None) -> IssuedApiToken:
        return services.api_token_create(
            user=self.cleaned_data["user"], name=self.cleaned_data["name"], actor=actor
        )


@admin.register(ApiToken)
class ApiTokenAdmin(
    ServiceTransactionsMixin,
    ShowIssuedSecretOnceMixin,
    RefuseForbiddenActionsMixin,
    admin.ModelAdmin,
):
    """Staff may create a token for a user and revoke tokens; nothing else changes a token.

    A token staff create is shown to them once, like a key they create, for handing over to
    the user or an integration. A revoked token keeps its row for the record.
    """

    form = ApiTokenAdminForm
    issued_kind = "token"
    issued_title = _("API token created")
    issued_template = ISSUED_TOKEN_TEMPLATE
    issued_gone_advice = _("If you did not copy it, revoke the token and create a new one.")
    list_display = (
        "name",
        "user",
        "prefix",
        "created_at",
        "created_by_display",
        "last_used_at",
        "revoked_at",
    )
    list_filter = (("revoked_at", admin.EmptyFieldListFilter),)
    list_select_related = ("user", "created_by")
    search_fields = ("name", "prefix", "user__username", "user__email")
    fields = list_display
    readonly_fields = ("created_by_display",)
    autocomplete_fields = ("user",)
    actions = ["revoke_tokens"]

    def get_fields(self, request: HttpRequest, obj: ApiToken | None = None):
        if obj is None:
            return ("user", "name")
        return self.fields

    @admin.display(description=_("Created by"), ordering="created_by__username")
    def created_by_display(self, obj: ApiToken) -> str:
        # Empty for tokens made before the creator was recorded and once the creator is deleted.
        # The dash is returned here because a read-only field would otherwise show "None".
        if obj.created_by_id is None:
            return "—"
        return obj.created_by.get_username()

    def add_view(self, request: HttpRequest, form_url: str = "", extra_context=None):
        # Whichever button is pressed, the answer is the way to the page with the plaintext.
        extra_context = {
            **(extra_context or {}),
            "show_save_and_add_another": False,
            "show_save_and_continue": False,
        }
        return super().add_view(request, form_url, extra_context)

    def save_model(self, request: HttpRequest, obj: ApiToken, form, change: bool) -> None:
        issued = form.create_token(actor=request.user)
        self.keep_issued(request, obj, issued, issued.token)

    def has_change_permission(self, request: HttpRequest, obj: ApiToken | None = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: ApiToken | None = None) -> bool:
        return False

    def has_revoke_permission(self, request: HttpRequest) -> bool:
        # Revoking is the one change allowed, to whoever may change tokens.
        return super().has_change_permission(request)

    @admin.action(description=_("Revoke selected API tokens"), permissions=["revoke"])
    def revoke_tokens(self, request: HttpRequest, queryset: QuerySet[ApiToken]) -> None:
        revoked = 0
        for token in queryset.filter(revoked_at__isnull=True):
            services.api_token_revoke(token=token, actor=request.user)
            revoked += 1
        self.message_user(
            request,
            ngettext("Revoked %(count)s token.", "Revoked %(count)s tokens.", revoked)
            % {"count": revoked},
            messages.SUCCESS,
        )

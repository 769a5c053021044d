"""Staff admin for groups."""

import re
from typing import Any

from django import forms
from django.contrib import admin
from django.contrib.admin.widgets import AdminTextareaWidget
from django.http import HttpRequest
from django.utils.translation import gettext_lazy as _

from keys import services
from keys.models import Group

from .transactions import ServiceTransactionsMixin

_PATTERN_SEPARATORS = re.compile(r"[\n,]+")


class ModelPatternsField(forms.CharField):
    """A group's model patterns as text (one per line or comma separated); a list in the model."""

    def prepare_value(self, value: Any) -> Any:
        if isinstance(value, list):
            return "\n".join(value)
        return value

    def to_python(self, value: Any) -> list[str]:
        text = super().to_python(value)
        patterns = (part.strip() for part in _PATTERN_SEPARATORS.split(text))
        return list(dict.fromkeys(pattern for pattern in patterns if pattern))


class GroupAdminForm(forms.ModelForm):
    models = ModelPatternsField(
        required=False,
        widget=AdminTextareaWidget(attrs={"rows": 4}),
        help_text=(
            "Model names or patterns this group may use, one per line or comma separated, "
            "e.g. claude-* or gpt-4o."
        ),
    )

    class Meta:
        model = Group
        fields = ("name", "description", "multiplier", "models", "is_active")


@admin.register(Group)
class GroupAdmin(ServiceTransactionsMixin, admin.ModelAdmin):
    form = GroupAdminForm
    list_display = ("name", "multiplier", "model_patterns", "is_active", "updated_at")
    list_filter = ("is_active",)
    search_fields = ("name", "description")

    @admin.display(description=_("models"))
    def model_patterns(self, group: Group) -> str:
        return ", ".join(group.models)

    def save_model(self, request: HttpRequest, obj: Group, form, change: bool) -> None:
        services.group_save(group=obj, actor=request.user)

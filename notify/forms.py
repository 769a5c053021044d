"""The portal's notification forms: the team's settings, the member's email preference, and a
webhook. Fields only read what was typed; the rules and their messages are the services'
(notify.services.settings' pure `parse_*` functions, notify.services.webhooks), shown on the
forms' fields (ServiceErrorsMixin)."""

from typing import Any

from django import forms
from django.utils.translation import gettext_lazy as _

from keys.forms import ServiceErrorsMixin, usd_limit_field

from .models import EmailPreference, EventType, NotificationSettings, Webhook
from .services.settings import RECIPIENTS_MESSAGE
from .services.webhooks import ALL_TYPES, SUBSCRIBABLE_TYPES


def _numbers_text(numbers: list[int]) -> str:
    return ", ".join(str(number) for number in numbers)


class NotificationSettingsForm(ServiceErrorsMixin, forms.Form):
    """A team's notification settings, for its leads; notification_settings_update checks them."""

    email_recipients = forms.ChoiceField(
        label=_("Who gets the emails"),
        choices=NotificationSettings.Recipients.choices,
        widget=forms.RadioSelect,
        error_messages={"invalid_choice": RECIPIENTS_MESSAGE, "required": RECIPIENTS_MESSAGE},
        help_text=_(
            "About a key: its limits, its expiry, and when it is disabled. Its owner is "
            "always told when a key is created or rotated for them; a member's monthly cap goes to "
            "the leads and that member, the team's budget to the leads."
        ),
    )
    thresholds = forms.CharField(
        label=_("Spend thresholds (%)"),
        required=False,
        widget=forms.TextInput(attrs={"placeholder": "50, 80, 100", "autocomplete": "off"}),
        help_text=_(
            "An email when a limit (a key's quota or window, a member's cap, the team's "
            "budget) reaches each of these percentages, once per limit and window. At most 5, "
            "from 1 to 100. Empty: no threshold emails."
        ),
    )
    expiry_warning_days = forms.CharField(
        label=_("Expiry warnings (days before)"),
        required=False,
        widget=forms.TextInput(attrs={"placeholder": "7, 3, 1", "autocomplete": "off"}),
        help_text=_(
            "An email this many days before a key expires, each once. At most 5, from 1 "
            "to 90. Empty: no warnings (the email when it has expired is still sent)."
        ),
    )
    spike_limit_usd = usd_limit_field(
        _("Spend-spike guard (USD in 10 minutes)"),
        _("0 = off"),
        help_text=_(
            "A key that spends more than this in 10 minutes is disabled at once, and "
            "key.disabled is sent. 0 or empty: no spike guard."
        ),
    )

    def __init__(self, *args: Any, current: NotificationSettings, **kwargs: Any):
        kwargs.setdefault(
            "initial",
            {
                "email_recipients": current.email_recipients,
                "thresholds": _numbers_text(current.thresholds),
                "expiry_warning_days": _numbers_text(current.expiry_warning_days),
                "spike_limit_usd": format(current.spike_limit_usd, "f")
                if current.spike_limit_usd
                else "",
            },
        )
        super().__init__(*args, **kwargs)

    def service_arguments(self) -> dict[str, Any]:
        """Every field as typed: the service finds what changed (empty text clears a list)."""
        return {field: self.cleaned_data[field] for field in self.fields}


class EmailPreferenceForm(ServiceErrorsMixin, forms.Form):
    own_key_emails = forms.BooleanField(
        label=_("Emails about my keys"),
        required=False,
        help_text=_(
            "Limits, expiry and changes of the keys you own in this team. Off: none of "
            "those reach you as the owner (what you get as a lead of the team still does). When a "
            "key is created or rotated for you, you are told unless this is off."
        ),
    )

    def __init__(self, *args: Any, preference: EmailPreference, **kwargs: Any):
        kwargs.setdefault("initial", {"own_key_emails": preference.own_key_emails})
        super().__init__(*args, **kwargs)


EVENT_TYPE_CHOICES = [
    (ALL_TYPES, _("Every event, including types added later")),
    *[(value, EventType(value).label) for value in SUBSCRIBABLE_TYPES],
]


class WebhookForm(ServiceErrorsMixin, forms.Form):
    url = forms.CharField(
        label=_("Payload URL"),
        required=False,
        # Text with a URL keyboard: the portal styles text inputs, and the checks are the service's.
        widget=forms.TextInput(
            attrs={
                "inputmode": "url",
                "placeholder": "https://example.com/hooks/hcai",
                "autocomplete": "off",
                "spellcheck": "false",
            }
        ),
        help_text=_(
            "We POST each event here as JSON, signed with the webhook's secret. It must "
            "reach a public address: loopback, private and link-local addresses are refused."
        ),
    )
    event_types = forms.MultipleChoiceField(
        label=_("Events"),
        choices=EVENT_TYPE_CHOICES,
        required=False,
        widget=forms.CheckboxSelectMultiple,
        help_text=_("Choose “Every event”, or the events this URL should receive."),
    )

    def __init__(self, *args, webhook: Webhook | None = None, **kwargs) -> None:
        if webhook is not None:
            kwargs.setdefault(
                "initial",
                {
                    "url": webhook.url,
                    "event_types": webhook.event_types,
                    "is_active": webhook.is_active,
                },
            )
        super().__init__(*args, **kwargs)
        if webhook is not None:
            self.fields["is_active"] = forms.BooleanField(
                label=_("Active"),
                required=False,
                help_text=_("When off, events are not posted to this URL."),
            )

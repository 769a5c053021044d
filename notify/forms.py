"""The Notifications page's forms. Every field passes what was typed on to the services, whose
pure `parse_*` functions hold the rules and their messages (notify.services.settings)."""

from typing import Any

from django import forms

from keys.forms import ServiceErrorsMixin, usd_limit_field

from .models import EmailPreference, NotificationSettings
from .services.settings import RECIPIENTS_MESSAGE


def _numbers_text(numbers: list[int]) -> str:
    return ", ".join(str(number) for number in numbers)


class NotificationSettingsForm(ServiceErrorsMixin, forms.Form):
    """A team's notification settings, for its leads; notification_settings_update checks them."""

    email_recipients = forms.ChoiceField(
        label="Who gets the emails",
        choices=NotificationSettings.Recipients.choices,
        widget=forms.RadioSelect,
        error_messages={"invalid_choice": RECIPIENTS_MESSAGE, "required": RECIPIENTS_MESSAGE},
        help_text="About a key: its limits, its expiry, and when it is disabled. Its owner is "
        "always told when a key is created or rotated for them; a member's monthly cap goes to "
        "the leads and that member, the team's budget to the leads.",
    )
    thresholds = forms.CharField(
        label="Spend thresholds (%)",
        required=False,
        widget=forms.TextInput(attrs={"placeholder": "50, 80, 100", "autocomplete": "off"}),
        help_text="An email when a limit (a key's quota or window, a member's cap, the team's "
        "budget) reaches each of these percentages, once per limit and window. At most 5, "
        "from 1 to 100. Empty: no threshold emails.",
    )
    expiry_warning_days = forms.CharField(
        label="Expiry warnings (days before)",
        required=False,
        widget=forms.TextInput(attrs={"placeholder": "7, 3, 1", "autocomplete": "off"}),
        help_text="An email this many days before a key expires, each once. At most 5, from 1 "
        "to 90. Empty: no warnings (the email when it has expired is still sent).",
    )
    spike_limit_usd = usd_limit_field(
        "Spend-spike guard (USD in 10 minutes)",
        "0 = off",
        help_text="A key that spends more than this in 10 minutes is disabled at once, and "
        "key.disabled is sent. 0 or empty: no spike guard.",
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
        label="Emails about my keys",
        required=False,
        help_text="Limits, expiry and changes of the keys you own in this team. Off: none of "
        "those reach you as the owner (what you get as a lead of the team still does). When a "
        "key is created or rotated for you, you are told unless this is off.",
    )

    def __init__(self, *args: Any, preference: EmailPreference, **kwargs: Any):
        kwargs.setdefault("initial", {"own_key_emails": preference.own_key_emails})
        super().__init__(*args, **kwargs)

"""The portal's webhook form. It only reads what was typed; the rules and their messages are
notify.services.webhooks', shown on the form's fields (ServiceErrorsMixin)."""

from django import forms

from keys.forms import ServiceErrorsMixin

from .models import EventType, Webhook
from .services.webhooks import ALL_TYPES, SUBSCRIBABLE_TYPES

EVENT_TYPE_CHOICES = [
    (ALL_TYPES, "Every event, including types added later"),
    *[(value, EventType(value).label) for value in SUBSCRIBABLE_TYPES],
]


class WebhookForm(ServiceErrorsMixin, forms.Form):
    url = forms.CharField(
        label="Payload URL",
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
        help_text="We POST each event here as JSON, signed with the webhook's secret. It must "
        "reach a public address: loopback, private and link-local addresses are refused.",
    )
    event_types = forms.MultipleChoiceField(
        label="Events",
        choices=EVENT_TYPE_CHOICES,
        required=False,
        widget=forms.CheckboxSelectMultiple,
        help_text="Choose “Every event”, or the events this URL should receive.",
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
                label="Active",
                required=False,
                help_text="When off, events are not posted to this URL.",
            )

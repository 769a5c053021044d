from django import forms

from .selectors import STATUS_FILTER_HELP, StatusFilter, status_filter


class RequestFilterForm(forms.Form):
    """The team usage page's filter of its latest requests."""

    status = forms.CharField(required=False, max_length=16, help_text=STATUS_FILTER_HELP)

    def clean_status(self) -> StatusFilter | None:
        value = self.cleaned_data["status"]
        return status_filter(value) if value else None

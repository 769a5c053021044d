from django.apps import AppConfig


class NotifyConfig(AppConfig):
    name = "notify"
    verbose_name = "Notifications"

    def ready(self) -> None:
        # billing tells, notify listens: billing never imports notify.
        from billing.signals import usage_settled

        from .thresholds import usage_settled_received

        usage_settled.connect(usage_settled_received, dispatch_uid="notify.thresholds")

from django.apps import AppConfig


class CoreConfig(AppConfig):
    """What every app shares: the retrying task base, the client IP and request id, the
    logging filter, and the REST API platform (errors, pagination, query checks, parsers,
    schema hooks). It imports no other app of ours, and no app imports the project package."""

    name = "core"
    verbose_name = "Core"

    def ready(self) -> None:
        from celery.signals import task_failure, task_retry, task_success

        from .metrics import count_task_outcome

        def counted(outcome: str):
            def receiver(sender=None, **kwargs) -> None:
                count_task_outcome(getattr(sender, "name", str(sender)), outcome)

            return receiver

        # Kept referenced by the class: signals hold weak references by default.
        self._task_receivers = [counted(outcome) for outcome in ("success", "failure", "retry")]
        for signal, receiver in zip(
            (task_success, task_failure, task_retry), self._task_receivers, strict=True
        ):
            signal.connect(receiver)

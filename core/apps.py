from django.apps import AppConfig


class CoreConfig(AppConfig):
    """What every app shares: the retrying task base, the client IP and request id, the
    logging filter, and the REST API platform (errors, pagination, query checks, parsers,
    schema hooks). It imports no other app of ours, and no app imports the project package."""

    name = "core"
    verbose_name = "Core"

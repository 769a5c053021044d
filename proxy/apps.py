from django.apps import AppConfig


class ProxyConfig(AppConfig):
    name = "proxy"
    verbose_name = "Relay"

    def ready(self) -> None:
        from core import credentials

        # Every process (web, relay, Celery, manage.py) refuses to start with a missing or
        # malformed CHANNEL_CREDENTIAL_KEYS, instead of failing on the first channel it reads.
        credentials.check_keys()

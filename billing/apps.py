from django.apps import AppConfig


class BillingConfig(AppConfig):
    name = "billing"
    verbose_name = "Billing"

    def ready(self) -> None:
        from core.metrics import add_scrape_gauge

        from . import ledger

        add_scrape_gauge(
            "hcai_usage_stream_backlog",
            "Usage entries the relay recorded that are not yet written to the database.",
            ledger.usage_backlog,
        )
        add_scrape_gauge(
            "hcai_usage_ingest_lag_seconds",
            "How long the oldest usage entry not yet written to the database has waited.",
            ledger.usage_ingest_lag_seconds,
        )

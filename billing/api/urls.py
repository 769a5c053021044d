from django.urls import path

from . import export, views

app_name = "billing-api"

urlpatterns = [
    path("usage/", views.UsageEventListView.as_view(), name="usage"),
    path("usage/daily/", views.UsageDailyListView.as_view(), name="usage-daily"),
    path("usage/export.csv", export.UsageExportView.as_view(), name="usage-export"),
    path(
        "usage/daily/export.csv", export.UsageDailyExportView.as_view(), name="usage-daily-export"
    ),
    path("usage/refusals/", views.RefusalCountListView.as_view(), name="usage-refusals"),
]

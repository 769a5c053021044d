from django.urls import path

from . import views

app_name = "billing-api"

urlpatterns = [
    path("usage/", views.UsageEventListView.as_view(), name="usage"),
    path("usage/daily/", views.UsageDailyListView.as_view(), name="usage-daily"),
    path("usage/refusals/", views.RefusalCountListView.as_view(), name="usage-refusals"),
]

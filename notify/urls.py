"""The portal's notification pages, under a team: /t/<slug>/notifications/..."""

from django.urls import path  # noqa: F401

app_name = "notify"

urlpatterns: list = []

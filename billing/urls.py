from django.urls import path

from . import views

app_name = "billing"

urlpatterns = [
    path("t/<slug:team_slug>/usage/", views.team_usage, name="team_usage"),
    path("t/<slug:team_slug>/usage/export.csv", views.team_usage_export, name="team_usage_export"),
    path(
        "t/<slug:team_slug>/usage/sessions/<str:session_id>/",
        views.session_usage,
        name="session_usage",
    ),
    path("t/<slug:team_slug>/keys/<int:key_id>/usage/", views.key_usage, name="key_usage"),
]

from django.contrib.auth import views as auth_views
from django.urls import path

from . import views

app_name = "keys"

urlpatterns = [
    path("accounts/login/", views.LoginView.as_view(), name="login"),
    path("accounts/logout/", auth_views.LogoutView.as_view(), name="logout"),
    path("accounts/tokens/", views.token_list, name="tokens"),
    path("accounts/tokens/new/", views.token_create, name="token_create"),
    path("accounts/tokens/<int:token_id>/revoke/", views.token_revoke, name="token_revoke"),
    path("invitations/<str:token>/", views.invitation_accept, name="invitation"),
    path("", views.home, name="home"),
    path("t/<slug:team_slug>/keys/", views.key_list, name="list"),
    path("t/<slug:team_slug>/keys/new/", views.key_create, name="create"),
    path("t/<slug:team_slug>/keys/<int:key_id>/", views.key_detail, name="detail"),
    path("t/<slug:team_slug>/keys/<int:key_id>/edit/", views.key_edit, name="edit"),
    path("t/<slug:team_slug>/keys/<int:key_id>/rotate/", views.key_rotate, name="rotate"),
    path("t/<slug:team_slug>/keys/<int:key_id>/delete/", views.key_delete, name="delete"),
    path("t/<slug:team_slug>/team/", views.team_detail, name="team"),
    path(
        "t/<slug:team_slug>/team/invitations/new/",
        views.invitation_create,
        name="invitation_create",
    ),
    path(
        "t/<slug:team_slug>/team/invitations/<int:invitation_id>/revoke/",
        views.invitation_revoke,
        name="invitation_revoke",
    ),
    path(
        "t/<slug:team_slug>/team/members/<int:membership_id>/role/",
        views.member_role,
        name="member_role",
    ),
    path(
        "t/<slug:team_slug>/team/members/<int:membership_id>/remove/",
        views.member_remove,
        name="member_remove",
    ),
]

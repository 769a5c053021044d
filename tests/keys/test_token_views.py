"""The portal's API tokens page: a person sees, creates and revokes only their own tokens, a new
token's plaintext goes out in one response only, and a revoked token stops opening the API.
"""

import re

import pytest
from django.test import Client, override_settings
from django.urls import reverse
from django.utils import timezone

from keys import services
from keys.models import ApiToken, digest_key

from ..factories import UserFactory

ME = "/api/v1/me/"
REVOKED_DETAIL = {"detail": "Invalid or revoked API token."}


@pytest.fixture
def own_token(member) -> ApiToken:
    return services.api_token_create(user=member, name="ci-bot", actor=member).token


@pytest.fixture
def lead_token(lead) -> ApiToken:
    return services.api_token_create(user=lead, name="lead-export", actor=lead).token


def tokens_url() -> str:
    return reverse("keys:tokens")


def create_url() -> str:
    return reverse("keys:token_create")


def revoke_url(token: ApiToken) -> str:
    return reverse("keys:token_revoke", args=[token.pk])


def stored(token: ApiToken) -> dict:
    """Every column of the token as stored."""
    return ApiToken.objects.filter(pk=token.pk).values().get()


def messages_of(response) -> list[str]:
    return [str(message) for message in response.context["messages"]]


def me(plaintext: str):
    """GET /api/v1/me/ with the token alone: a fresh client, so no portal session rides along."""
    return Client().get(ME, headers={"Authorization": f"Token {plaintext}"})


# --- anonymous visitors ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("method", "target"),
    [
        ("get", lambda token: tokens_url()),
        ("post", lambda token: create_url()),
        ("get", lambda token: revoke_url(token)),
        ("post", lambda token: revoke_url(token)),
    ],
    ids=["list", "create", "revoke-page", "revoke"],
)
def test_anonymous_visitors_are_sent_to_sign_in_and_nothing_changes(
    client, own_token, method, target
):
    before = stored(own_token)
    path = target(own_token)

    response = getattr(client, method)(path, {"name": "sneaky"} if method == "post" else None)

    assert response.status_code == 302
    assert response["Location"] == f"{reverse('keys:login')}?next={path}"
    assert list(ApiToken.objects.values_list("name", flat=True)) == ["ci-bot"]
    assert stored(own_token) == before


# --- the list -------------------------------------------------------------------------------


def test_list_shows_only_the_signed_in_persons_tokens(client, member, own_token, lead_token):
    old = services.api_token_create(user=member, name="old-script", actor=member).token
    services.api_token_revoke(token=old, actor=None)
    old.refresh_from_db()
    client.force_login(member)

    response = client.get(tokens_url())

    assert response.status_code == 200
    assert list(response.context["tokens"]) == [old, own_token]
    page = response.content.decode()
    assert "ci-bot" in page
    assert f"<code>{own_token.prefix}…</code>" in page
    assert "old-script" in page
    assert '<span class="badge badge--disabled">Revoked</span>' in page
    assert '<span class="badge badge--enabled">Active</span>' in page
    assert "lead-export" not in page
    assert lead_token.prefix not in page
    # Only the active token offers a revoke button.
    assert f'href="{revoke_url(own_token)}"' in page
    assert f'href="{revoke_url(old)}"' not in page


def test_list_names_the_creator_only_of_tokens_someone_else_made(client, member, own_token):
    alice = UserFactory(username="alice", is_staff=True)
    bob = UserFactory(username="bob")
    by_staff = services.api_token_create(user=member, name="by-staff", actor=alice).token
    by_bob = services.api_token_create(user=member, name="by-bob", actor=bob).token
    by_system = services.api_token_create(user=member, name="by-system", actor=None).token
    client.force_login(member)

    response = client.get(tokens_url())

    assert list(response.context["tokens"]) == [by_system, by_bob, by_staff, own_token]
    page = response.content.decode()
    assert page.count("created by") == 2
    assert '<span class="muted">created by alice (staff)</span></td>' in page
    assert '<span class="muted">created by bob</span></td>' in page
    rows = {
        token.name: re.search(
            rf'<tr data-token-id="{token.pk}">.*?</tr>', page, flags=re.DOTALL
        ).group()
        for token in (own_token, by_staff, by_bob, by_system)
    }
    assert "created by alice (staff)" in rows["by-staff"]
    assert "created by bob" in rows["by-bob"]
    assert "created by" not in rows["ci-bot"]
    assert "created by" not in rows["by-system"]


def test_list_names_no_creator_once_the_creator_is_deleted(client, member):
    alice = UserFactory(username="alice", is_staff=True)
    services.api_token_create(user=member, name="by-staff", actor=alice)
    alice.delete()
    client.force_login(member)

    page = client.get(tokens_url()).content.decode()

    assert "by-staff" in page
    assert "created by" not in page


def test_list_shows_created_and_last_used(client, member, own_token):
    client.force_login(member)
    page = client.get(tokens_url()).content.decode()
    created = timezone.localtime(own_token.created_at)
    assert f'<time datetime="{created:%Y-%m-%dT%H:%M:%S}' in page
    assert f">{created:%Y-%m-%d %H:%M} UTC</time>" in page
    assert '<td data-label="Last used"><span class="muted">never</span></td>' in page

    services.api_token_mark_used(token=own_token)
    page = client.get(tokens_url()).content.decode()
    assert '<td data-label="Last used"><span class="muted">never</span></td>' not in page
    assert ">just now</time>" in page


def test_empty_list_offers_the_form_and_the_api_docs(client, member):
    client.force_login(member)

    page = client.get(tokens_url()).content.decode()

    assert "No tokens yet" in page
    assert f'action="{create_url()}"' in page
    assert 'href="/api/docs/"' in page


def test_the_user_menu_links_to_the_tokens_page_everywhere(client, member, team):
    client.force_login(member)
    link = f'<a class="usermenu__link" href="{tokens_url()}"'

    keys_page = client.get(reverse("keys:list", args=[team.slug])).content.decode()
    tokens_page = client.get(tokens_url()).content.decode()

    assert f"{link}>API tokens</a>" in keys_page
    assert f'{link} aria-current="page">API tokens</a>' in tokens_page


MAIN_NAV = '<nav class="mainnav" aria-label="Main">'


@pytest.mark.parametrize("page", ["list", "issued", "gone", "revoke"])
def test_the_tokens_pages_keep_the_main_navigation(client, lead, lead_token, page):
    client.force_login(lead)
    if page == "list":
        response = client.get(tokens_url())
    elif page == "revoke":
        response = client.get(revoke_url(lead_token))
    else:
        issued_url = client.post(create_url(), {"name": "nav"})["Location"]
        response = client.get(issued_url)
        if page == "gone":
            response = client.get(issued_url)
            assert response.status_code == 410
    html = response.content.decode()
    assert MAIN_NAV in html
    assert '<a href="/t/acme/keys/">Keys</a>' in html
    assert '<a href="/t/acme/team/">Team</a>' in html
    assert '<span class="teamswitch teamswitch--single">Acme</span>' in html


def test_someone_in_no_team_gets_the_tokens_page_without_team_navigation(client, db):
    client.force_login(UserFactory(username="loner"))
    html = client.get(tokens_url()).content.decode()
    assert MAIN_NAV not in html
    assert "teamswitch" not in html


def test_someone_without_a_team_can_use_the_tokens_page(client, db):
    loner = UserFactory(username="loner")
    client.force_login(loner)

    response = client.post(create_url(), {"name": "personal"})

    assert response.status_code == 303
    assert ApiToken.objects.get().user == loner


# --- create ---------------------------------------------------------------------------------


@override_settings(PUBLIC_BASE_URL="https://keys.example.com")
def test_create_shows_the_token_once_and_stores_only_its_digest(client, member):
    client.force_login(member)

    response = client.post(create_url(), {"name": " grafana-export "}, follow=True)

    assert response.status_code == 200
    token = ApiToken.objects.get()
    [(issued_url, status)] = response.redirect_chain
    assert status == 303
    assert issued_url.startswith(f"/accounts/tokens/{token.pk}/issued/")
    plaintext = response.context["plaintext"]
    assert plaintext.startswith("hcat_")
    assert (token.user, token.name, token.revoked_at) == (member, "grafana-export", None)
    assert token.created_by == member
    assert token.digest == digest_key(plaintext)
    assert plaintext not in {str(value) for value in stored(token).values()}
    page = response.content.decode()
    assert f'data-testid="new-token">{plaintext}</code>' in page
    assert 'data-copy="#new-token"' in page
    assert "Copy this token now. It will not be shown again." in page
    assert f'curl -H "Authorization: Token {plaintext}" https://keys.example.com/api/v1/me/' in page
    assert 'href="/api/docs/"' in page
    assert "no-store" in response["Cache-Control"]
    # Nothing keeps it: no message queued, nothing in the session or cookies.
    assert messages_of(response) == []
    assert plaintext not in str(dict(client.session))
    assert plaintext not in str(response.cookies)
    assert plaintext not in str(client.cookies)
    assert plaintext not in issued_url
    # The list afterwards shows the token by its prefix only.
    after = client.get(tokens_url()).content.decode()
    assert plaintext not in after
    assert f"<code>{token.prefix}…</code>" in after


def test_the_new_token_opens_the_api_as_its_owner(client, member):
    client.force_login(member)
    plaintext = client.post(create_url(), {"name": "ci"}, follow=True).context["plaintext"]

    response = me(plaintext)

    assert response.status_code == 200
    assert response.json()["username"] == "member"


@pytest.mark.parametrize(
    ("name", "message"),
    [
        ("", "Name is required."),
        ("   ", "Name is required."),
        ("x" * 101, "Name can be at most 100 characters."),
        ("bad\x00name", "Null characters are not allowed."),
    ],
    ids=["empty", "spaces", "too-long", "null-character"],
)
def test_a_bad_name_is_shown_inline_with_the_input_kept_and_nothing_written(
    client, member, own_token, name, message
):
    client.force_login(member)

    response = client.post(create_url(), {"name": name})

    assert response.status_code == 400
    assert response.context["form"].errors == {"name": [message]}
    page = response.content.decode()
    assert f'<ul class="errorlist" id="id_name_error"><li>{message}</li></ul>' in page
    assert "Please correct the highlighted field below. Nothing was saved." in page
    assert 'aria-invalid="true"' in page
    if name:
        assert f'value="{name}"' in page
    assert "no-store" not in response.get("Cache-Control", "")
    # The page still lists the existing token; no new one was made.
    assert list(response.context["tokens"]) == [own_token]
    assert list(ApiToken.objects.all()) == [own_token]


def test_create_needs_post(client, member):
    client.force_login(member)

    response = client.get(create_url())

    assert response.status_code == 405
    assert not ApiToken.objects.exists()


# --- revoke ---------------------------------------------------------------------------------


def test_revoke_asks_first(client, member, own_token):
    client.force_login(member)

    response = client.get(revoke_url(own_token))

    assert response.status_code == 200
    page = response.content.decode()
    assert "Revoke token “ci-bot”?" in page
    assert f"<code>{own_token.prefix}…</code> stops working immediately" in page
    assert f'<form method="post" action="{revoke_url(own_token)}">' in page
    assert stored(own_token)["revoked_at"] is None


def test_revoking_an_own_token(client, member, own_token):
    client.force_login(member)

    response = client.post(revoke_url(own_token))

    assert response.status_code == 302
    assert response["Location"] == tokens_url()
    after = stored(own_token)
    assert after["revoked_at"] is not None
    assert after["name"] == "ci-bot"
    assert messages_of(client.get(tokens_url())) == [
        "Token “ci-bot” revoked. Requests that send it now get 401 Unauthorized."
    ]


def test_revoking_twice_keeps_the_first_time_and_says_so(client, member, own_token):
    client.force_login(member)
    client.post(revoke_url(own_token), follow=True)
    first = stored(own_token)["revoked_at"]

    response = client.post(revoke_url(own_token), follow=True)

    assert stored(own_token)["revoked_at"] == first
    assert messages_of(response) == ["Token “ci-bot” was already revoked."]
    page = client.get(revoke_url(own_token)).content.decode()
    assert "Token “ci-bot” is revoked" in page
    assert 'method="post"' not in page.split('class="card card--danger confirm"')[1]


@pytest.mark.parametrize("method", ["get", "post"])
def test_another_persons_token_is_404_and_stays_active(client, member, lead_token, method):
    client.force_login(member)
    before = stored(lead_token)

    response = getattr(client, method)(revoke_url(lead_token))

    assert response.status_code == 404
    assert stored(lead_token) == before
    assert stored(lead_token)["revoked_at"] is None


def test_an_unknown_token_is_404(client, member):
    client.force_login(member)
    assert client.post(reverse("keys:token_revoke", args=[999999])).status_code == 404


def test_a_revoked_token_is_refused_by_the_api(client, member):
    client.force_login(member)
    plaintext = client.post(create_url(), {"name": "ci"}, follow=True).context["plaintext"]
    token = ApiToken.objects.get()
    assert me(plaintext).status_code == 200

    client.post(revoke_url(token))
    response = me(plaintext)

    assert response.status_code == 401
    assert response.json() == REVOKED_DETAIL

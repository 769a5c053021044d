"""The one-time page of a new secret (keys.views.show_once): a POST answers 303, the first GET
shows the secret (or the several secrets of one action), every later GET (a reload, a second
tab, another session) gets 410 Gone with the way to a new one, and nothing is created or
rotated by any GET."""

import threading

import pytest
from cryptography.fernet import Fernet
from django.contrib.sessions.backends.cache import SessionStore
from django.core.cache import cache
from django.test import Client, RequestFactory
from django.urls import reverse

from keys.models import ApiKey, ApiToken, AuditEvent, digest_key
from keys.views import show_once

GONE = "<h1>This secret was shown once.</h1>"
GONE_KEY = "<p>If you did not copy it, rotate the key to get a new one."
GONE_TOKEN = "<p>If you did not copy it, revoke the token and create a new one."


def create_key(client, team, group):
    return client.post(
        reverse("keys:create", args=[team.slug]), {"name": "HC Personal", "group": str(group.pk)}
    )


def audit_rows() -> list[tuple[str, str]]:
    return list(AuditEvent.objects.order_by("pk").values_list("action", "subject_label"))


def test_a_reload_of_the_new_key_page_shows_it_was_shown_once_and_creates_nothing(
    client, team, member, group
):
    client.force_login(member)
    response = create_key(client, team, group)
    assert response.status_code == 303
    issued_url = response["Location"]
    key = ApiKey.objects.get()
    assert issued_url.startswith(f"/t/{team.slug}/keys/{key.pk}/issued/")

    first = client.get(issued_url)
    assert first.status_code == 200
    plaintext = first.context["plaintext"]
    assert digest_key(plaintext) == key.digest
    assert f'data-testid="new-key">{plaintext}</code>' in first.content.decode()
    assert "no-store" in first["Cache-Control"]
    rows = audit_rows()

    reload = client.get(issued_url)
    assert reload.status_code == 410
    page = reload.content.decode()
    assert GONE in page
    assert GONE_KEY in page
    assert f'href="/t/{team.slug}/keys/{key.pk}/rotate/"' in page
    assert plaintext not in page
    assert "no-store" in reload["Cache-Control"]
    assert list(ApiKey.objects.values_list("pk", "digest")) == [(key.pk, key.digest)]
    assert audit_rows() == rows == [("key.created", "HC Personal")]


def test_a_reload_after_rotate_shows_it_was_shown_once_and_rotates_nothing(
    client, team, member, issued
):
    key = issued.key
    client.force_login(member)
    response = client.post(reverse("keys:rotate", args=[team.slug, key.pk]))
    assert response.status_code == 303
    first = client.get(response["Location"])
    assert first.status_code == 200
    assert "The previous key has stopped working." in first.content.decode()
    digest = ApiKey.objects.get(pk=key.pk).digest
    assert digest == digest_key(first.context["plaintext"])

    reload = client.get(response["Location"])
    assert reload.status_code == 410
    assert GONE_KEY in reload.content.decode()
    assert ApiKey.objects.get(pk=key.pk).digest == digest
    assert AuditEvent.objects.filter(action="key.rotated").count() == 1


def test_a_reload_of_the_new_token_page_shows_it_was_shown_once_and_creates_nothing(client, member):
    client.force_login(member)
    response = client.post(reverse("keys:token_create"), {"name": "ci"})
    assert response.status_code == 303
    token = ApiToken.objects.get()
    first = client.get(response["Location"])
    assert first.status_code == 200
    assert token.digest == digest_key(first.context["plaintext"])

    reload = client.get(response["Location"])
    assert reload.status_code == 410
    page = reload.content.decode()
    assert GONE in page
    assert GONE_TOKEN in page
    assert 'href="/accounts/tokens/"' in page
    assert "no-store" in reload["Cache-Control"]
    assert list(ApiToken.objects.values_list("pk", flat=True)) == [token.pk]


def test_the_page_opens_only_in_the_session_that_made_the_secret(client, team, member, group):
    client.force_login(member)
    issued_url = create_key(client, team, group)["Location"]
    # The same person in another browser: the URL alone is worth nothing...
    elsewhere = Client()
    elsewhere.force_login(member)
    response = elsewhere.get(issued_url)
    assert response.status_code == 410
    assert "plaintext" not in response.context
    # ...and did not use the secret up: the session that made it still sees it once.
    assert client.get(issued_url).status_code == 200


def test_another_teams_member_gets_404_and_the_secret_stays(client, team, member, group, outsider):
    client.force_login(member)
    issued_url = create_key(client, team, group)["Location"]
    stranger = Client()
    stranger.force_login(outsider)
    assert stranger.get(issued_url).status_code == 404
    assert client.get(issued_url).status_code == 200


def test_a_one_time_id_shows_only_its_own_key(client, team, member, group):
    client.force_login(member)
    first_url = create_key(client, team, group)["Location"]
    second_key = ApiKey.objects.get()
    other = client.post(
        reverse("keys:create", args=[team.slug]), {"name": "second", "group": str(group.pk)}
    )
    once = first_url.rstrip("/").rsplit("/", 1)[1]
    other_key = ApiKey.objects.exclude(pk=second_key.pk).get()
    wrong = reverse("keys:issued", args=[team.slug, other_key.pk, once])
    assert client.get(wrong).status_code == 410
    assert client.get(other["Location"]).status_code == 200


def test_an_expired_secret_is_gone(client, team, member, group):
    client.force_login(member)
    issued_url = create_key(client, team, group)["Location"]
    # What the cache does after SHOW_ONCE_SECONDS.
    cache.clear()
    response = client.get(issued_url)
    assert response.status_code == 410
    assert GONE_KEY in response.content.decode()


class RecordingCache:
    """The real cache, with a hook between reading an entry and returning it."""

    def __init__(self, on_get=None):
        self.timeouts = []
        self.on_get = on_get or (lambda: None)

    def set(self, key, value, timeout):
        self.timeouts.append(timeout)
        cache.set(key, value, timeout)

    def get(self, key, default=None):
        value = cache.get(key, default)
        self.on_get()
        return value

    def delete(self, key):
        return cache.delete(key)


def test_the_secret_waits_for_five_minutes_at_most(client, team, member, group, monkeypatch):
    recording = RecordingCache()
    monkeypatch.setattr(show_once, "cache", recording)
    client.force_login(member)
    create_key(client, team, group)
    assert recording.timeouts == [5 * 60]


@pytest.mark.django_db
def test_two_requests_that_read_at_once_show_the_secret_exactly_once(member, monkeypatch):
    """The race made deterministic: both readers get the entry before either deletes it."""
    request_a, request_b = _request(member), _request(member)
    pending = show_once.Pending(kind="key", object_id=7, plaintext="sk-hc-x")
    response = show_once.redirect_to_secret(
        request_a, pending, "keys:issued", team_slug="acme", key_id=7
    )
    assert response.status_code == 303
    [entry] = request_a.session[show_once.SESSION_KEY]
    request_b.session[show_once.SESSION_KEY] = [entry]  # two tabs of one session
    one_time_id = entry[0]

    both_read = threading.Barrier(2, timeout=10)
    monkeypatch.setattr(show_once, "cache", RecordingCache(on_get=both_read.wait))
    results = []

    def take(request):
        results.append(show_once.take_secret(request, one_time_id, kind="key", object_id=7))

    threads = [threading.Thread(target=take, args=(request,)) for request in (request_a, request_b)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(result is None for result in results) == [False, True]
    assert [result.plaintext for result in results if result is not None] == ["sk-hc-x"]
    assert cache.get(f"show-once:{member.pk}:{one_time_id}") is None


@pytest.mark.django_db
def test_neither_the_cache_nor_the_session_alone_holds_the_secret(member):
    request = _request(member)
    pending = show_once.Pending(kind="key", object_id=7, plaintext="sk-hc-secret-plaintext")
    show_once.redirect_to_secret(request, pending, "keys:issued", team_slug="acme", key_id=7)

    [(one_time_id, sealing_key)] = request.session[show_once.SESSION_KEY]
    sealed = cache.get(f"show-once:{member.pk}:{one_time_id}")
    assert b"sk-hc-secret-plaintext" not in sealed
    assert b"sk-hc-secret-plaintext" in Fernet(sealing_key).decrypt(sealed)  # the two together
    assert "sk-hc-secret-plaintext" not in str(dict(request.session.items()))
    # Another session's key opens nothing, and the entry it tried is gone all the same.
    other = _request(member)
    other.session[show_once.SESSION_KEY] = [[one_time_id, Fernet.generate_key().decode()]]
    assert show_once.take_secret(other, one_time_id, kind="key", object_id=7) is None
    assert cache.get(f"show-once:{member.pk}:{one_time_id}") is None


@pytest.mark.django_db
def test_one_id_keeps_the_several_secrets_of_one_action_in_order(member):
    request = _request(member)
    pending = [
        show_once.Pending(kind="key", object_id=pk, plaintext=f"sk-hc-{pk}", rotated=True)
        for pk in (9, 3, 5)
    ]
    response = show_once.redirect_to_secrets(
        request, pending, "keys:issued", team_slug="acme", key_id=9
    )
    assert response.status_code == 303
    [(one_time_id, _)] = request.session[show_once.SESSION_KEY]

    assert show_once.take_secrets(request, one_time_id, kind="key") == pending
    assert show_once.take_secrets(request, one_time_id, kind="key") is None


@pytest.mark.django_db
@pytest.mark.parametrize(
    "pending",
    [
        [show_once.Pending(kind="key", object_id=7, plaintext="sk-hc-a")] * 2,
        [show_once.Pending(kind="token", object_id=7, plaintext="hcat_a")],
        [
            show_once.Pending(kind="key", object_id=7, plaintext="sk-hc-a"),
            show_once.Pending(kind="token", object_id=8, plaintext="hcat_a"),
        ],
    ],
    ids=["two-secrets", "another-kind", "mixed-kinds"],
)
def test_the_single_secret_page_refuses_an_id_that_holds_anything_else(member, pending):
    request = _request(member)
    show_once.redirect_to_secrets(request, pending, "keys:issued", team_slug="acme", key_id=7)
    [(one_time_id, _)] = request.session[show_once.SESSION_KEY]

    assert show_once.take_secret(request, one_time_id, kind="key", object_id=7) is None
    assert cache.get(f"show-once:{member.pk}:{one_time_id}") is None


@pytest.mark.django_db
def test_an_entry_sealed_before_secrets_became_a_list_is_gone_not_an_error(member):
    """Written by the code before a deploy (one secret, not a list), within its few minutes."""
    request = _request(member)
    sealing_key = Fernet.generate_key()
    old = b'{"kind": "key", "object_id": 7, "plaintext": "sk-hc-x", "rotated": false}'
    cache.set(f"show-once:{member.pk}:old-id", Fernet(sealing_key).encrypt(old), 60)
    request.session[show_once.SESSION_KEY] = [["old-id", sealing_key.decode()]]

    assert show_once.take_secret(request, "old-id", kind="key", object_id=7) is None


def test_a_pending_secret_keeps_its_plaintext_out_of_repr():
    pending = show_once.Pending(kind="key", object_id=7, plaintext="sk-hc-secret-plaintext")
    assert "sk-hc-secret-plaintext" not in repr(pending)


def _request(user):
    request = RequestFactory().get("/")
    request.user = user
    request.session = SessionStore()
    return request

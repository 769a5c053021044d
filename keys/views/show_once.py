"""The secrets of new or rotated keys, or of a new API token, shown once after a redirect.

The POST that creates or rotates answers 303 to a one-time page, so a reload (F5) repeats a
harmless GET instead of the POST, and nothing is created twice. Between the two requests the
plaintexts of the action (one, or many for the admin's bulk rotate) wait in the shared cache
(Redis in production, local memory embedded) for a few minutes under a random one-time id,
sealed (Fernet) with a key of its own that only the session holds; never in the database, the
session, a message, a URL or a log. So the cache alone (a Redis dump) shows nothing, the
session alone (a database dump) holds only a key to an entry gone within minutes, the page
opens only in the browser session that made the secrets, and the URL alone is worth nothing.

The first GET takes the secrets: it reads the entry and then deletes it, and shows them only
if its own delete removed the entry. A delete reports whether it removed anything, atomically
on Redis (DEL) and under the local-memory cache's lock, so of two tabs (or two workers) that
read the entry at the same moment exactly one shows it. Every later GET gets the "shown once"
page.
"""

import json
import secrets
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field

from cryptography.fernet import Fernet, InvalidToken
from django.core.cache import cache
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect
from django.utils.cache import add_never_cache_headers
from django.utils.translation import gettext_lazy

# Long enough for a slow redirect, short enough that an unread secret does not linger.
SHOW_ONCE_SECONDS = 5 * 60
SESSION_KEY = "show_once_ids"
# The session keeps only the last few ids: a person cannot have more unread secrets than tabs.
MAX_PENDING = 20
GONE_MESSAGE = gettext_lazy("This secret was shown once.")


@dataclass(frozen=True)
class Pending:
    """What the one-time page needs of each secret: the secret and what it belongs to."""

    kind: str  # "key" or "token"
    object_id: int
    # Kept out of repr() so a log line or traceback showing the object cannot leak it.
    plaintext: str = field(repr=False)
    rotated: bool = False


def _cache_key(request: HttpRequest, one_time_id: str) -> str:
    return f"show-once:{request.user.pk}:{one_time_id}"


def redirect_to_secrets(
    request: HttpRequest, pending: Sequence[Pending], viewname: str, **url_kwargs
) -> HttpResponse:
    """Keep the secrets of one action for one GET and answer 303 See Other to the page
    `viewname`, which is given the one-time id as its `once` URL argument."""
    one_time_id = secrets.token_urlsafe(16)
    sealing_key = Fernet.generate_key()
    payload = json.dumps([asdict(each) for each in pending]).encode()
    cache.set(
        _cache_key(request, one_time_id), Fernet(sealing_key).encrypt(payload), SHOW_ONCE_SECONDS
    )
    entries = [*request.session.get(SESSION_KEY, []), [one_time_id, sealing_key.decode()]]
    request.session[SESSION_KEY] = entries[-MAX_PENDING:]
    response = redirect(viewname, once=one_time_id, **url_kwargs)
    response.status_code = 303
    return response


def redirect_to_secret(
    request: HttpRequest, pending: Pending, viewname: str, **url_kwargs
) -> HttpResponse:
    """redirect_to_secrets for the one secret of a create or rotate."""
    return redirect_to_secrets(request, [pending], viewname, **url_kwargs)


def take_secrets(request: HttpRequest, one_time_id: str, *, kind: str) -> list[Pending] | None:
    """The secrets behind `one_time_id`, once: None if this session did not make them, they
    were already taken or have expired, or any of them is not of `kind`."""
    entries = request.session.get(SESSION_KEY, [])
    sealing_key = next((key for entry_id, key in entries if entry_id == one_time_id), None)
    if sealing_key is None:
        return None
    request.session[SESSION_KEY] = [entry for entry in entries if entry[0] != one_time_id]
    cache_key = _cache_key(request, one_time_id)
    sealed = cache.get(cache_key)
    # Only the request whose delete removed the entry shows it (see the module's docstring).
    if sealed is None or not cache.delete(cache_key):
        return None
    try:
        pending = [Pending(**each) for each in json.loads(Fernet(sealing_key).decrypt(sealed))]
    except (InvalidToken, TypeError):
        # TypeError: an entry sealed by the code before a deploy (one secret, not a list),
        # within its few minutes; it is treated as gone rather than failing the page.
        return None
    if not pending or any(each.kind != kind for each in pending):
        return None
    return pending


def take_secret(
    request: HttpRequest, one_time_id: str, *, kind: str, object_id: int
) -> Pending | None:
    """The one secret behind `one_time_id`, once (take_secrets): None also if the id holds
    several secrets or belongs to another object than the page's."""
    pending = take_secrets(request, one_time_id, kind=kind)
    if pending is None or len(pending) != 1 or pending[0].object_id != object_id:
        return None
    return pending[0]


def no_store(response: HttpResponse) -> HttpResponse:
    """Neither the secret nor the page that says it is gone may be kept by a browser or proxy."""
    add_never_cache_headers(response)
    return response

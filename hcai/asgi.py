"""The ASGI entry point: /v1/* (and OpenAI's legacy billing paths without /v1, which some
clients ask a relay for: /dashboard/billing/*) goes to the relay's lean app, everything else
to Django.

The relay (proxy.app) is dispatched here, by path, before Django's handler: that handler starts
a thread per request, which the relay's hot path cannot afford. Portal, admin and API stay on
Django's handler. Lifespan events go to the relay, which owns the process-wide connections.
"""

import os

from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "hcai.settings.production")

django_application = get_asgi_application()

# Imported after get_asgi_application() has set Django up: the relay uses its models.
from proxy.app import RelayApp  # noqa: E402
from proxy.balance import LEGACY_PREFIX  # noqa: E402

relay = RelayApp()
RELAY_PREFIXES = ("/v1/", LEGACY_PREFIX)


async def application(scope, receive, send):
    if scope["type"] == "http" and scope["path"].startswith(RELAY_PREFIXES):
        await relay(scope, receive, send)
    elif scope["type"] == "lifespan":
        await relay.lifespan(scope, receive, send)
    else:
        await django_application(scope, receive, send)

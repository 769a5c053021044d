"""Laptop settings: DEBUG on and throwaway secrets unless the environment says otherwise."""

from .base import *  # noqa: F403
from .base import env

DEBUG = env.bool("DEBUG", default=True)
SECRET_KEY = env.str("SECRET_KEY", default="dev-only-insecure-secret-key-change-me-0123456789")
# Dev/test only, never production: a fixed, published key (base64 of
# "dev-only-insecure-channel-key-01"), so a laptop encrypts channel credentials with nothing set.
CHANNEL_CREDENTIAL_KEYS = env.list(
    "CHANNEL_CREDENTIAL_KEYS", default=["ZGV2LW9ubHktaW5zZWN1cmUtY2hhbm5lbC1rZXktMDE="]
)

# Serve static files straight from the apps under uvicorn, no collectstatic needed.
WHITENOISE_USE_FINDERS = True
WHITENOISE_AUTOREFRESH = True

# Local webhook receivers (127.0.0.1) are allowed on a laptop and in tests.
WEBHOOKS_ALLOW_PRIVATE = env.bool("WEBHOOKS_ALLOW_PRIVATE", default=True)

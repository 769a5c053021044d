"""Logging filters: every line carries the request id, and nothing shaped like a secret."""

import logging
import re

from .request_id import current_request_id

# Relay keys, API tokens and invitation tokens (whose link is logged as a request path),
# whatever the code around them did by mistake. The prefixes are those of keys.secret_formats,
# written out because core imports nothing from the apps above it (a test keeps them in step);
# any run after a prefix is masked, not only a whole secret, so a cut-off one is masked too.
_SECRET_PATTERN = re.compile(r"\b(sk-hc-|hcat_|hcinv_)[A-Za-z0-9_-]{4,}")


class RequestIdFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        record.request_id = current_request_id.get()
        return True


class RedactSecretsFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        redacted = _SECRET_PATTERN.sub(lambda m: m.group(1) + "[REDACTED]", message)
        if redacted != message:
            record.msg, record.args = redacted, None
        return True

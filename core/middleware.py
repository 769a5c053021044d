import logging
import time

from .request_id import current_request_id, new_request_id

logger = logging.getLogger("hcai.request")


class RequestIdMiddleware:
    """Give each request an id (X-Request-Id in and out) and log one line when it ends."""

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        request_id = new_request_id(request.headers.get("X-Request-Id"))
        token = current_request_id.set(request_id)
        request.request_id = request_id
        started = time.monotonic()
        try:
            response = self.get_response(request)
            response["X-Request-Id"] = request_id
            logger.info(
                "%s %s %s %.1fms",
                request.method,
                request.path,
                response.status_code,
                (time.monotonic() - started) * 1000,
            )
            return response
        finally:
            current_request_id.reset(token)

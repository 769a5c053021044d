"""Cache headers for the REST API."""

from django.utils.cache import add_never_cache_headers

API_PATH = "/api/"


class ApiNoStoreMiddleware:
    """Every answer under /api/ says no-store: create and rotate carry a key shown once, and
    every other answer (keys, members, usage) belongs to its caller alone, so no browser or
    shared cache may keep any of them. All of them rather than a chosen few, so a new endpoint
    that carries a secret cannot be forgotten."""

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        response = self.get_response(request)
        if request.path.startswith(API_PATH):
            add_never_cache_headers(response)
        return response

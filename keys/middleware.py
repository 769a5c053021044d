"""The signed-in user's language, over what LocaleMiddleware read from the cookie or
Accept-Language: the choice is saved on the account, so it follows them to a new browser.

Not for the REST API (/api/): its messages follow each request's Accept-Language, as DRF's own
do, whoever sends it; and the API answers a database outage with its own 503, which a look-up
here, before DRF, would turn into a bare 500."""

from django.http import HttpRequest
from django.utils import translation

from keys.services import user_language

API_PREFIX = "/api/"


class UserLanguageMiddleware:
    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request: HttpRequest):
        if not request.path_info.startswith(API_PREFIX) and request.user.is_authenticated:
            language = user_language(user=request.user)
            if language:
                translation.activate(language)
                request.LANGUAGE_CODE = translation.get_language()
        return self.get_response(request)

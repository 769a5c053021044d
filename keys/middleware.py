"""The signed-in user's language, over what LocaleMiddleware read from the cookie or
Accept-Language: the choice is saved on the account, so it follows them to a new browser."""

from django.http import HttpRequest
from django.utils import translation

from keys.services import user_language


class UserLanguageMiddleware:
    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request: HttpRequest):
        # request.user is the session's: a REST API token is read later, by DRF, so the API
        # follows Accept-Language for token callers, as DRF's own messages do.
        if request.user.is_authenticated:
            language = user_language(user=request.user)
            if language:
                translation.activate(language)
                request.LANGUAGE_CODE = translation.get_language()
        return self.get_response(request)

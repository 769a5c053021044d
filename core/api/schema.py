"""OpenAPI pieces shared by every API view: the error bodies and which operations return them."""

from collections.abc import Callable

from drf_spectacular.utils import OpenApiResponse, extend_schema
from rest_framework.serializers import Serializer

# DRF's field-error body: each field that failed, with its messages ("non_field_errors" for the
# rest). Services and serializers both answer in this shape.
FIELD_ERRORS_SCHEMA = {
    "type": "object",
    "additionalProperties": {"type": "array", "items": {"type": "string"}},
    "example": {"rate_limit": ["Enter a rate limit like 60/m: …"]},
}
_FIELD_ERRORS_DESCRIPTION = "Validation failed: the messages of each field that failed."
FIELD_ERRORS = OpenApiResponse(response=FIELD_ERRORS_SCHEMA, description=_FIELD_ERRORS_DESCRIPTION)


def conflict(message: str) -> OpenApiResponse:
    """A 409: the request is well formed, but the data as it stands forbids it (message)."""
    return OpenApiResponse(
        response={
            "type": "object",
            "properties": {"detail": {"type": "string"}},
            "required": ["detail"],
            "example": {"detail": message},
        },
        description=f"Refused as things stand, e.g. “{message}”",
    )


def filtered_list(
    *, summary: str, description: str, filters: type[Serializer], item: type[Serializer]
) -> Callable:
    """A list that takes the query parameters `filters` declares, checked as sent
    (core.api.query.validated_query): a page of `item`, or a 400 naming each one that failed."""
    return extend_schema(
        summary=summary,
        description=description,
        parameters=[filters],
        responses={200: item(many=True), 400: FIELD_ERRORS},
    )


_ERROR_COMPONENT = "Error"
_ERROR_SCHEMA = {
    "type": "object",
    "properties": {"detail": {"type": "string"}},
    "required": ["detail"],
}
_ERROR_RESPONSES = {
    "401": "No credentials, or an invalid or revoked token.",
    "403": "Not allowed to do this (or a browser session without its CSRF token).",
    "429": "Too many requests with this token; retry after the Retry-After seconds.",
    "503": "The database is unavailable for the moment; retry after the Retry-After seconds.",
}
_NOT_FOUND = "Not found, or not visible to the caller (another team's objects), or no such page."


def add_error_responses(result: dict, generator, request, public: bool) -> dict:
    """drf-spectacular post-processing hook: every operation can answer 401, 403, 429 and 503, and
    those that name an object or a page can answer 404, all with {"detail": "…"}; those that page
    answer a bad page or page_size with a 400."""
    result.setdefault("components", {}).setdefault("schemas", {})[_ERROR_COMPONENT] = _ERROR_SCHEMA
    error = {"application/json": {"schema": {"$ref": f"#/components/schemas/{_ERROR_COMPONENT}"}}}
    for path, operations in result.get("paths", {}).items():
        for operation in operations.values():
            responses = operation["responses"]
            for status_code, description in _ERROR_RESPONSES.items():
                responses.setdefault(status_code, {"description": description, "content": error})
            paged = any(param["name"] == "page" for param in operation.get("parameters", []))
            if "{" in path or paged:
                responses.setdefault("404", {"description": _NOT_FOUND, "content": error})
            if paged:
                # page and page_size are checked like every query parameter (core.api.query).
                responses.setdefault(
                    "400",
                    {
                        "description": _FIELD_ERRORS_DESCRIPTION,
                        "content": {"application/json": {"schema": FIELD_ERRORS_SCHEMA}},
                    },
                )
    return result

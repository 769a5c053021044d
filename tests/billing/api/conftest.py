# The API client and actors of the keys API tests, shared rather than written twice.
from ...keys.api.conftest import actor_of_kind, api, staff  # noqa: F401

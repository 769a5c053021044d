"""The schema, its interactive docs, and a JSON 404 for every other path under /api/.

Included after the versioned API, so its catch-all only answers what no endpoint matched. The
docs page is for a portal session: anyone else is sent to sign in, like on any portal page (its
calls, and the schema it loads, then go with that session).
"""

from django.contrib.auth.decorators import login_required
from django.urls import path, re_path
from drf_spectacular.views import SpectacularSwaggerView

from .views import SchemaView, not_found

urlpatterns = [
    path("schema/", SchemaView.as_view(), name="api-schema"),
    path(
        "docs/",
        login_required(SpectacularSwaggerView.as_view(url_name="api-schema")),
        name="api-docs",
    ),
    re_path(r"", not_found),
]

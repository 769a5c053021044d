"""The schema, its interactive docs, and a JSON 404 for every other path under /api/.

Included after the versioned API, so its catch-all only answers what no endpoint matched.
"""

from django.urls import path, re_path
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerView

from .views import not_found

urlpatterns = [
    path("schema/", SpectacularAPIView.as_view(), name="api-schema"),
    path("docs/", SpectacularSwaggerView.as_view(url_name="api-schema"), name="api-docs"),
    re_path(r"", not_found),
]

from django.contrib import admin
from django.urls import include, path

from . import views

# The staff admin names the product, not "Django administration".
admin.site.site_header = "HCAI Keys administration"
admin.site.site_title = "HCAI Keys admin"
admin.site.index_title = "Keys, teams, usage and channels"

urlpatterns = [
    path("healthz", views.healthz, name="healthz"),
    path("readyz", views.readyz, name="readyz"),
    path("metrics", views.metrics, name="metrics"),
    path("admin/", admin.site.urls),
    path("api/v1/", include("keys.api.urls")),
    path("api/v1/", include("billing.api.urls")),
    path("api/v1/", include("notify.api.urls")),
    path("api/", include("keys.api.docs_urls")),
    path("", include("billing.urls")),
    path("", include("notify.urls")),
    path("", include("keys.urls")),
]

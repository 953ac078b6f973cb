from django.contrib import admin
from django.urls import include, path

from .health import Health

handler400 = "careid.views.bad_request"
handler403 = "careid.views.permission_denied"
handler404 = "careid.views.page_not_found"
handler500 = "careid.views.server_error"  # also the 503 page, for a component that is down

urlpatterns = [
    path("", include("signin.urls")),
    path("", include("accounts.urls")),
    path("", include("authenticators.urls")),
    path("", include("oidc.urls")),
    path("admin/", admin.site.urls),
    path("health/", Health.as_view(), name="health"),
]

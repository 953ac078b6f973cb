from django.urls import include, path

from . import registry, views

urlpatterns = [
    path("authenticators/", views.select_type, name="select_authenticator_type"),
    path("profile/authenticators/<str:kind>/remove/", views.remove_own, name="remove_own_authenticator"),
    path("register/<str:token>/", views.registration_link, name="registration_link"),
] + [path("", include(kind.urlconf())) for kind in registry.enabled_types()]

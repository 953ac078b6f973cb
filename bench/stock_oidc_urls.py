"""The stock project's URLs: allauth's OpenID Connect provider as its documentation includes it
(/identity/o/authorize, /identity/o/api/token, /identity/o/api/userinfo, /.well-known/...)."""

from django.urls import include, path

urlpatterns = [
    path("", include("allauth.idp.urls")),
]

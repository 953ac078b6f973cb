from allauth.idp.oidc import views as allauth_views
from django.urls import path

from . import views

app_name = "oidc"

urlpatterns = [
    path(".well-known/openid-configuration", views.configuration, name="configuration"),
    path(".well-known/jwks.json", views.jwks, name="jwks"),
    path("oidc/authorize", views.authorize, name="authorization"),
    path("oidc/token", views.token, name="token"),
    path("oidc/userinfo", allauth_views.user_info, name="userinfo"),
    path("oidc/revoke", views.revoke, name="revoke"),
    path("oidc/logout", views.logout, name="logout"),
]

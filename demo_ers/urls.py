from django.urls import path

from . import views

urlpatterns = [
    path("", views.home, name="home"),
    path("login", views.login, name="login"),
    path("callback", views.callback, name="callback"),
    path("logout", views.logout, name="logout"),
    path("backchannel-logout", views.backchannel_logout, name="backchannel_logout"),
    path("jwks.json", views.jwks, name="jwks"),
]

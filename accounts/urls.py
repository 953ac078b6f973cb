from django.urls import path

from . import views

urlpatterns = [
    path("", views.home, name="home"),
    path("profile/", views.profile, name="profile"),
    path("profile/email/add/", views.add_email, name="add_email"),
    path("profile/email/confirm/<str:key>/", views.confirm_email, name="confirm_email"),
    path("terms/", views.page("pages/terms.html"), name="terms"),
    path("cookies/", views.page("pages/cookies.html"), name="cookies"),
    path("accessibility/", views.page("pages/accessibility.html"), name="accessibility"),
]

from django.urls import path

from . import views

urlpatterns = [
    path("", views.home, name="home"),
    path("profile/", views.profile, name="profile"),
    path("profile/email/add/", views.add_email, name="add_email"),
    path("profile/email/confirm/<str:key>/", views.confirm_email, name="confirm_email"),
    path("profile/email/<int:pk>/remove/", views.email_address, {"action": "remove"}, name="remove_email"),
    path("profile/email/<int:pk>/verify/", views.email_address, {"action": "verify"}, name="verify_email"),
    path("profile/email/<int:pk>/make-care-identity-email/", views.email_address, {"action": "primary"},
         name="make_primary_email"),
    path("profile/sessions/", views.sessions, name="sessions"),
    path("profile/activity/", views.activity, name="activity"),
    path("help/", views.page("pages/help.html"), name="help"),
    path("allowed-email-domains/", views.allowed_domains, name="allowed_domains"),
    path("terms/", views.page("pages/terms.html"), name="terms"),
    path("cookies/", views.page("pages/cookies.html"), name="cookies"),
    path("accessibility/", views.page("pages/accessibility.html"), name="accessibility"),
]

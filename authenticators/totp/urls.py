from django.urls import path

from . import views

app_name = "totp"

urlpatterns = [
    path("authenticators/authenticator-app/", views.register, name="register"),
    path("register/authenticator-app/code/", views.code, name="code"),
    path("register/authenticator-app/code/resend/", views.resend, name="resend"),
    path("register/authenticator-app/password/", views.password, name="password"),
    path("register/authenticator-app/qr/", views.qr, name="qr"),
    path("register/authenticator-app/verify/", views.verify, name="verify"),
    path("register/authenticator-app/done/", views.done, name="done"),
    path("login/authenticator-app/", views.signin, name="signin"),
    path("login/authenticator-app/code/", views.signin_code, name="signin_code"),
    path("profile/password/", views.change_password, name="change_password"),
    path("login/authenticator-app/forgotten-password/", views.forgotten_password, name="forgotten_password"),
    path("login/authenticator-app/forgotten-password/code/", views.reset_code, name="reset_code"),
    path("login/authenticator-app/forgotten-password/code/resend/", views.reset_resend, name="reset_resend"),
    path("login/authenticator-app/forgotten-password/app/", views.reset_app, name="reset_app"),
    path("login/authenticator-app/forgotten-password/password/", views.reset_password, name="reset_password"),
    path("login/authenticator-app/forgotten-password/done/", views.reset_done, name="reset_done"),
]

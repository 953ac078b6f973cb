from django.contrib.auth.backends import ModelBackend


class CareIdentityBackend(ModelBackend):
    """Loads the signed-in person and answers permission checks.

    It never authenticates: the only way in is the CIS2 sign-in page, which checks a
    password *and* an authenticator (signin.flows.complete_signin). So no form, admin
    page or API can become a password-only back door.
    """

    def authenticate(self, request, **credentials):
        return None

"""Register a relying service (eRS, ...) with careid's OpenID Connect provider; prints its client_id."""

from __future__ import annotations

import json
from pathlib import Path

from django.core.management.base import BaseCommand, CommandError

from oidc import flows
from oidc.forms import RelyingServiceForm
from oidc.models import AuthMethod


class Command(BaseCommand):
    help = "Register a relying service. Prints its client_id (and, with --secret, its secret, once)."

    def add_arguments(self, parser) -> None:
        parser.add_argument("--name", required=True)
        parser.add_argument("--redirect-uri", action="append", required=True, dest="redirect_uris")
        parser.add_argument("--post-logout-redirect-uri", action="append", default=[], dest="post_logout_redirect_uris")
        parser.add_argument("--backchannel-logout-uri", default="")
        keys = parser.add_mutually_exclusive_group(required=True)
        keys.add_argument("--jwks-uri", help="private_key_jwt with the service's published keys")
        keys.add_argument("--jwks-file", help="private_key_jwt with these public keys (a JWKS JSON file)")
        keys.add_argument("--secret", action="store_true", help="client_secret_basic/_post with a generated secret")
        keys.add_argument("--public", action="store_true", help="a public client (PKCE required)")
        parser.add_argument("--scopes", default="openid profile email")
        parser.add_argument("--refresh-tokens", action="store_true")
        parser.add_argument("--client-id", help="a client_id of your choosing (default: generated)")

    def handle(self, *args, **options) -> None:
        if options["jwks_file"]:
            try:
                jwks = Path(options["jwks_file"]).read_text()
            except OSError as error:
                raise CommandError(f"Cannot read {options['jwks_file']}: {error.strerror}") from None
        else:
            jwks = ""
        method = (AuthMethod.CLIENT_SECRET_BASIC if options["secret"] else AuthMethod.NONE if options["public"]
                  else AuthMethod.PRIVATE_KEY_JWT)
        form = RelyingServiceForm(data={
            "name": options["name"], "auth_method": method, "redirect_uris": "\n".join(options["redirect_uris"]),
            "post_logout_redirect_uris": "\n".join(options["post_logout_redirect_uris"]),
            "backchannel_logout_uri": options["backchannel_logout_uri"], "jwks_uri": options["jwks_uri"] or "",
            "jwks": jwks, "allowed_scopes": options["scopes"].split(), "refresh_tokens": options["refresh_tokens"],
        })
        if options["client_id"]:
            form.instance.pk = options["client_id"]
            if type(form.instance).objects.filter(pk=options["client_id"]).exists():
                raise CommandError(f"A relying service with client_id {options['client_id']} already exists")
        if not form.is_valid():
            problems = "; ".join(f"{field}: {' '.join(errors)}" for field, errors in form.errors.items())
            raise CommandError(f"Not registered: {problems}")
        service, secret = flows.save_relying_service(form, actor=None)
        self.stdout.write(json.dumps({"client_id": service.pk, **({"client_secret": secret} if secret else {})}))

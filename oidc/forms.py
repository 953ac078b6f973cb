"""Registering a relying service: one form for the admin and for `manage.py register_client`."""

from __future__ import annotations

import json
from urllib.parse import urlsplit

import jwt
from allauth.idp.oidc.models import Client
from django import forms
from django.core.exceptions import ValidationError

from accounts.validators import VisibleText

from .adapter import SCOPES
from .models import SECRET_METHODS, AuthMethod, RelyingService

_LOOPBACK = {"127.0.0.1", "localhost", "::1"}


def _uri(value: str, what: str) -> str:
    """An absolute https URI (http only on loopback, for development), no fragment, no credentials."""
    value = value.strip()
    try:
        parts = urlsplit(value)
        port = parts.port
    except ValueError:
        raise ValidationError(f"{what} {value!r} is not a valid address") from None
    if parts.scheme not in ("https", "http") or not parts.hostname:
        raise ValidationError(f"{what} must be an absolute https address: {value!r}")
    if parts.scheme == "http" and parts.hostname not in _LOOPBACK:
        raise ValidationError(f"{what} must use https (http only for 127.0.0.1 or localhost): {value!r}")
    if parts.fragment or parts.username or parts.password or "*" in value:
        raise ValidationError(f"{what} must not have a fragment, credentials or wildcards: {value!r}")
    del port
    return value


def _uris(text: str, what: str) -> list[str]:
    return list(dict.fromkeys(_uri(line, what) for line in text.splitlines() if line.strip()))


class RelyingServiceForm(forms.ModelForm):
    auth_method = forms.ChoiceField(label="Client authentication", choices=AuthMethod.choices,
                                    initial=AuthMethod.PRIVATE_KEY_JWT)
    redirect_uris = forms.CharField(
        label="Redirect URIs", widget=forms.Textarea(attrs={"rows": 3}),
        help_text="One per line, matched exactly (https; http only on 127.0.0.1 or localhost).",
    )
    post_logout_redirect_uris = forms.CharField(label="Post-logout redirect URIs", required=False,
                                                widget=forms.Textarea(attrs={"rows": 2}), help_text="One per line.")
    backchannel_logout_uri = forms.CharField(label="Back-channel logout URI", required=False,
                                             help_text="careid POSTs a signed logout token here when a session ends.")
    jwks_uri = forms.CharField(label="JWKS URI", required=False,
                               help_text="For private_key_jwt: where the service publishes its public keys.")
    jwks = forms.CharField(label="JWKS", required=False, widget=forms.Textarea(attrs={"rows": 4}),
                           help_text="For private_key_jwt, instead of a JWKS URI: the public keys as JSON.")
    allowed_scopes = forms.MultipleChoiceField(
        label="Scopes", choices=[(scope, scope) for scope in SCOPES], initial=["openid", "profile", "email"],
        widget=forms.CheckboxSelectMultiple,
        # A service asking for one careid does not have (CIS2's nationalrbacaccess, ...) is not refused: careid
        # ignores it at sign-in. So registering it would grant nothing: only careid's own scopes are registered.
        error_messages={"invalid_choice": f"careid has no scope %(value)s (its scopes: {' '.join(SCOPES)}). A scope "
                                          "careid does not have is ignored when a service asks for it: nothing to register"},
    )
    refresh_tokens = forms.BooleanField(label="Refresh tokens", required=False,
                                        help_text="Let the service refresh its tokens while the person stays active.")
    new_secret = forms.BooleanField(
        label="Issue a new client secret", required=False,
        help_text="For client_secret_basic or _post: the old secret stops at once; the new one is shown once. "
                  "A service switched to a secret method gets one without asking.")

    class Meta:
        model = RelyingService
        fields = ["name"]

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        service: RelyingService = self.instance
        if service.pk and not self.is_bound:
            metadata = service.metadata()
            self.initial.update(
                auth_method=service.auth_method, redirect_uris="\n".join(service.get_redirect_uris()),
                post_logout_redirect_uris="\n".join(service.get_post_logout_redirect_uris()),
                backchannel_logout_uri=service.backchannel_logout_uri, jwks_uri=service.jwks_uri,
                jwks=json.dumps(metadata["jwks"], indent=2) if service.jwks else "",
                allowed_scopes=service.get_scopes(),
                refresh_tokens=Client.GrantType.REFRESH_TOKEN in service.get_grant_types(),
            )

    def clean_name(self) -> str:
        name = self.cleaned_data["name"].strip()
        VisibleText("Name")(name)
        return name

    def clean_redirect_uris(self) -> list[str]:
        uris = _uris(self.cleaned_data["redirect_uris"], "Redirect URI")
        if not uris:
            raise ValidationError("Give at least one redirect URI")
        return uris

    def clean_post_logout_redirect_uris(self) -> list[str]:
        return _uris(self.cleaned_data["post_logout_redirect_uris"], "Post-logout redirect URI")

    def clean_backchannel_logout_uri(self) -> str:
        value = self.cleaned_data["backchannel_logout_uri"].strip()
        return _uri(value, "Back-channel logout URI") if value else ""

    def clean_jwks_uri(self) -> str:
        value = self.cleaned_data["jwks_uri"].strip()
        return _uri(value, "JWKS URI") if value else ""

    def clean_jwks(self) -> dict | None:
        text = self.cleaned_data["jwks"].strip()
        if not text:
            return None
        try:
            jwks = json.loads(text)
            keys = jwt.PyJWKSet.from_dict(jwks).keys
        except (ValueError, jwt.PyJWTError) as error:
            raise ValidationError(f"Not a JWKS: {error}") from None
        if any(getattr(key.key, "private_numbers", None) for key in keys) or any("d" in key for key in jwks["keys"]):
            raise ValidationError("The JWKS holds a private key: register only the public keys")
        return jwks

    def clean_allowed_scopes(self) -> list[str]:
        scopes = self.cleaned_data["allowed_scopes"]
        return ["openid", *[scope for scope in scopes if scope != "openid"]]

    def clean(self):
        cleaned = super().clean()
        method = cleaned.get("auth_method")
        if method == AuthMethod.PRIVATE_KEY_JWT and not (cleaned.get("jwks_uri") or cleaned.get("jwks")):
            self.add_error("jwks_uri", "private_key_jwt needs the service's public keys: a JWKS URI or a JWKS")
        if cleaned.get("jwks_uri") and cleaned.get("jwks"):
            self.add_error("jwks", "Give a JWKS URI or a JWKS, not both")
        if cleaned.get("new_secret") and method not in SECRET_METHODS:
            self.add_error("new_secret", "There is no secret to issue: only a service that authenticates with a "
                                         "client secret (client_secret_basic or _post) has one")
        return cleaned

    def apply(self) -> RelyingService:
        """The form's values on the instance (not saved)."""
        data, service = self.cleaned_data, self.instance
        method = data["auth_method"]
        service.type = Client.Type.PUBLIC if method == AuthMethod.NONE else Client.Type.CONFIDENTIAL
        service.skip_consent = True
        service.set_redirect_uris(data["redirect_uris"])
        service.set_scopes(data["allowed_scopes"])
        service.set_default_scopes(["openid"])
        service.set_response_types(["code"])
        grant_types = [Client.GrantType.AUTHORIZATION_CODE]
        if data["refresh_tokens"]:
            grant_types.append(Client.GrantType.REFRESH_TOKEN)
        service.set_grant_types(grant_types)
        service.set_metadata(
            token_endpoint_auth_method=method, post_logout_redirect_uris=data["post_logout_redirect_uris"],
            backchannel_logout_uri=data["backchannel_logout_uri"], backchannel_logout_session_required=True,
            jwks_uri=data["jwks_uri"] if method == AuthMethod.PRIVATE_KEY_JWT else "",
            jwks=data["jwks"] if method == AuthMethod.PRIVATE_KEY_JWT else None,
        )
        return service

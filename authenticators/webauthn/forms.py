from __future__ import annotations

from django import forms


class CeremonyForm(forms.Form):
    """What the page's script (static/careid/webauthn.js) puts in the form after the browser's ceremony:
    the credential as PublicKeyCredential.toJSON() gives it, or why there is none (the error's name)."""

    credential = forms.CharField(required=False, max_length=64 * 1024, widget=forms.HiddenInput)
    client_error = forms.CharField(required=False, max_length=40, widget=forms.HiddenInput)

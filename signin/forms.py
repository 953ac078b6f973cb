from __future__ import annotations

from django import forms


class SignInMethodForm(forms.Form):
    method = forms.ChoiceField(
        label="Select your login method", widget=forms.RadioSelect, error_messages={"required": "Select your login method"}
    )
    remember = forms.BooleanField(label="Remember my selection", required=False)

    def __init__(self, *args, kinds, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.fields["method"].choices = [(kind.key, kind.signin_label) for kind in kinds]
        self.fields["method"].error_messages["invalid_choice"] = "Select your login method"

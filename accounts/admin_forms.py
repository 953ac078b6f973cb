"""Forms of the RA back office: each binds only its declared fields (no mass assignment).

Names and titles are checked by the User fields' own validators (accounts.validators), reasons here.
"""

from __future__ import annotations

from django import forms
from django.conf import settings
from django.utils.html import format_html

from authenticators import registry
from authenticators.models import RegistrationLink

from .models import AllowedEmailDomain, User
from .roles import assignable_roles, roles_of
from .validators import VisibleText


class ReasonField(forms.CharField):
    """A reason typed in a box. Its line breaks and tabs are spacing (the trail and the e-mails that quote
    it keep one line); any other control or invisible character is refused."""

    def __init__(self, **kwargs) -> None:
        super().__init__(max_length=500, validators=[VisibleText("Reason")], **kwargs)

    def to_python(self, value) -> str:
        return " ".join(super().to_python(value).split())


REASON = ReasonField(
    label="Reason", widget=forms.Textarea(attrs={"rows": 3}),
    help_text="Kept in the audit trail and, where it changes their access, told to the person.",
    error_messages={"required": "Give a reason"},
)


OPTIONAL_REASON = ReasonField(
    label="Reason (optional)", required=False, widget=forms.Textarea(attrs={"rows": 2}),
    help_text="Kept in the audit trail, e.g. the request you are acting on.",
)


class CreateUserForm(forms.ModelForm):
    reason = OPTIONAL_REASON

    class Meta:
        model = User
        fields = ["email", "title", "first_name", "last_name"]

    def clean_email(self) -> str:
        email = AllowedEmailDomain.objects.check_email(self.cleaned_data["email"])
        User.objects.check_email_free(email)
        return email


# The code of the e-mail field's error when the RA's sign-in is too old to change it (the admin audits it).
SIGN_IN_AGAIN = "sign_in_again"


class ReasonForChanges:
    """For an RA's form of a model: a reason for any change (SECURITY.md: every RA action is audited with
    one), none when nothing changes, as nothing is done. `reason_needed` says what to give it for."""

    @property
    def changed_fields(self) -> list[str]:
        return [name for name in self.changed_data if name != "reason"]

    def reason_needed(self) -> str:
        return "Give a reason for the change"

    def clean(self) -> dict:
        cleaned = super().clean()
        if self.changed_fields and not cleaned.get("reason") and "reason" not in self.errors:
            self.add_error("reason", self.reason_needed())
        return cleaned


class ChangeUserForm(ReasonForChanges, forms.ModelForm):
    """Names, title and Care Identity e-mail; roles only for those who may assign them; a reason for a change.

    Each field carries what the page showed (Django's hidden initial value), and a change is what the RA changed
    from that (changed_data, `shown`), not from the person as stored when the form comes back: another RA's change
    that landed meanwhile to a field this RA left alone stays.

    A new e-mail (and then a registration link) hands the profile to whoever holds the new address, so it
    needs the RA's sign-in at most 5 minutes old, as the person's own e-mail changes do: `sign_in_again_url`,
    given when it is older, is where the refusal's link sends the RA."""

    roles = forms.MultipleChoiceField(required=False, widget=forms.CheckboxSelectMultiple)
    reason = ReasonField(
        label="Reason for the change", required=False, widget=forms.Textarea(attrs={"rows": 2}),
        help_text="Kept in the audit trail, e.g. the request you are acting on. A new email address is told "
                  "to the person at both addresses.",
    )

    class Meta:
        model = User
        fields = ["title", "first_name", "last_name", "email"]

    def __init__(self, *args, actor, sign_in_again_url: str | None = None, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.actor = actor
        self.sign_in_again_url = sign_in_again_url
        choices = assignable_roles(actor)
        if choices and self.instance.pk != actor.pk:
            self.fields["roles"].choices = [(role, role) for role in choices]
            self.fields["roles"].initial = sorted(roles_of(self.instance) & set(choices))
        else:
            del self.fields["roles"]
        # The page sends back what it showed (with the e-mail's always, as a person always has one); a post without
        # it (a script's) is compared with the person as stored, as Django does.
        self.page_values = not self.is_bound or self["email"].html_initial_name in self.data
        for name, field in self.fields.items():
            field.show_hidden_initial = self.page_values and name != "reason"
        if self.is_bound and self.page_values and "roles" in self.fields:
            # A page that showed no role sends no hidden value for them: it showed none. Left missing, the page
            # shown again after a refusal would carry the roles then ticked as shown, and sent again with a reason
            # they would be no change.
            initial_roles = self["roles"].html_initial_name
            if initial_roles not in self.data:
                self.data = self.data.copy()
                self.data.setlist(initial_roles, [])

    def shown(self, name: str):
        """What the RA's page showed in field `name` (for a post without it, the person as stored)."""
        field = self.fields[name]
        if not self.page_values:
            return self[name].initial
        return field.to_python(self._widget_data_value(field.hidden_widget(), self[name].html_initial_name))

    def clean_email(self) -> str:
        if "email" not in self.changed_data:  # as the page showed it: not this RA's change, and not saved
            return self.cleaned_data["email"]
        email = AllowedEmailDomain.objects.check_email(self.cleaned_data["email"])
        User.objects.check_email_free(email, other_than=self.instance)
        return email

    def reason_needed(self) -> str:
        if "email" in self.changed_fields:
            return "Give a reason for changing the email address"
        return super().reason_needed()

    def clean(self) -> dict:
        cleaned = super().clean()
        email = cleaned.get("email", self.instance.email)
        if self.sign_in_again_url and "email" in self.changed_data and email != self.instance.email:
            minutes = int(settings.CAREID_REAUTHENTICATION_MAX_AGE.total_seconds() // 60)
            self.add_error("email", forms.ValidationError(format_html(
                "Sign in again to change the email address: your last sign-in was more than {} minutes ago. Nothing "
                "has been saved. <a href=\"{}\">Sign in again</a> and come back to this page.",
                minutes, self.sign_in_again_url), code=SIGN_IN_AGAIN))
        return cleaned


class ReasonForm(forms.Form):
    reason = REASON


class AllowedEmailDomainForm(ReasonForChanges, forms.ModelForm):
    """A domain on the Care Identity allow list decides who can be given a Care Identity: adding or changing
    one needs a reason, kept in the audit trail; saving it unchanged needs none, as nothing is done."""

    reason = ReasonField(
        label="Reason", required=False, widget=forms.Textarea(attrs={"rows": 3}),
        help_text="Kept in the audit trail, e.g. the request you are acting on.",
    )

    class Meta:
        model = AllowedEmailDomain
        fields = ["domain", "include_subdomains"]

    def reason_needed(self) -> str:
        return "Give a reason for the change" if self.instance.pk else "Give a reason for adding the domain"


class RemoveAllowedEmailDomainForm(forms.Form):
    reason = ReasonField(
        label="Reason", widget=forms.Textarea(attrs={"rows": 3}),
        help_text="Kept in the audit trail, e.g. the request you are acting on.",
        error_messages={"required": "Give a reason for removing the domain"},
    )


class IssueLinkForm(forms.Form):
    kind = forms.ChoiceField(
        label="Authenticator type",
        error_messages={"required": "Select an authenticator type", "invalid_choice": "Select an authenticator type"},
    )
    purpose = forms.ChoiceField(
        label="How the person will use it",
        widget=forms.RadioSelect,
        initial="presence",
    )
    # Whoever holds the link registers an authenticator on the profile: the trail says why it was issued.
    reason = ReasonField(
        label="Reason", widget=forms.Textarea(attrs={"rows": 3}),
        help_text="Kept in the audit trail, e.g. the request you are acting on or how you checked their identity.",
        error_messages={"required": "Give a reason for issuing the link"},
    )

    def __init__(self, *args, user, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        registered = {registered.kind.key for registered in registry.authenticators_of(user)}
        # How long each lasts, from the settings that decide it.
        self.fields["purpose"].choices = [
            ("presence", f"Now, in front of me (the link lasts {RegistrationLink.lifetime_in_words('presence')} "
                         f"and is shown here)"),
            ("emailed", f"Later, from their email (the link lasts {RegistrationLink.lifetime_in_words('emailed')})"),
        ]
        # An empty first choice: with none, the first type (iPad) went out to whoever the RA forgot to pick one for.
        self.fields["kind"].choices = [("", "Select an authenticator type")] + [
            (kind.key, kind.name) for kind in registry.types_for_registration() if kind.key not in registered
        ]

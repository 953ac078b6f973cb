"""Bench-only URLconf: all of careid's URLs plus /bench/bare/, the baseline for the sign-in page.

The bare view renders a form of the same shape as the sign-in page (a radio choice with the same
login methods, a checkbox and a CSRF token) with a minimal template and no base layout, so that the
two differ only in what the sign-in page does beyond that. Both run through the same middleware in
the same process.
"""

from __future__ import annotations

from django import forms
from django.http import HttpRequest, HttpResponse
from django.template import engines
from django.urls import include, path

from authenticators import registry
from careid.urls import handler400, handler403, handler404, handler500  # noqa: F401

# As many choices as the sign-in page lists (every type switched on), so the baseline renders as many radios.
METHODS = [(kind.key, kind.signin_label) for kind in registry.enabled_types()]


class BareForm(forms.Form):
    method = forms.ChoiceField(choices=METHODS, widget=forms.RadioSelect)
    remember = forms.BooleanField(required=False)


# Compiled once at import, like the cached template loader does for the real page.
BARE_TEMPLATE = engines["django"].from_string(
    """<!DOCTYPE html>
<html lang="en-GB">
<head><meta charset="utf-8"><title>Bare form</title></head>
<body>
<form method="post" novalidate>
  {% csrf_token %}
  <fieldset>
    <legend>Select your login method</legend>
    {% for value, label in form.fields.method.choices %}
    <input id="id_method_{{ forloop.counter0 }}" name="method" type="radio" value="{{ value }}"{% if form.method.value == value %} checked{% endif %}>
    <label for="id_method_{{ forloop.counter0 }}">{{ label }}</label>
    {% endfor %}
  </fieldset>
  <input id="id_remember" name="remember" type="checkbox" value="on"{% if form.remember.value %} checked{% endif %}>
  <label for="id_remember">Remember my selection</label>
  <button type="submit">Continue</button>
</form>
</body>
</html>
"""
)


def bare(request: HttpRequest) -> HttpResponse:
    form = BareForm(request.POST if request.method == "POST" else None)
    return HttpResponse(BARE_TEMPLATE.render({"form": form}, request))


urlpatterns = [
    path("bench/bare/", bare, name="bench_bare"),
    path("", include("careid.urls")),
]

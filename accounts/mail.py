"""Rendering and sending careid's e-mails (called from Celery tasks only)."""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.core.mail import EmailMessage
from django.template.loader import render_to_string


def send(template: str, to: str, context: dict[str, Any]) -> None:
    """templates/emails/<template>_subject.txt and _message.txt, as plain text."""
    context = {"base_url": settings.CAREID_BASE_URL, **context}
    subject = " ".join(render_to_string(f"emails/{template}_subject.txt", context).split())
    body = render_to_string(f"emails/{template}_message.txt", context)
    EmailMessage(subject, body, settings.DEFAULT_FROM_EMAIL, [to]).send()

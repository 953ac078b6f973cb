"""Rendering and sending careid's e-mails (called from Celery tasks only)."""

from __future__ import annotations

import smtplib
from typing import Any

from celery.exceptions import SoftTimeLimitExceeded
from django.conf import settings
from django.core.mail import EmailMessage
from django.core.mail.backends import smtp
from django.template.loader import render_to_string


def send(template: str, to: str, context: dict[str, Any]) -> None:
    """templates/emails/<template>_subject.txt and _message.txt, as plain text."""
    context = {"base_url": settings.CAREID_BASE_URL, **context}
    subject = " ".join(render_to_string(f"emails/{template}_subject.txt", context).split())
    body = render_to_string(f"emails/{template}_message.txt", context)
    EmailMessage(subject, body, settings.DEFAULT_FROM_EMAIL, [to]).send()


class _WaitsForTheEndOfData:
    """smtplib's DATA with CAREID_EMAIL_DATA_TIMEOUT instead of EMAIL_TIMEOUT: once the message is through, the
    server may have queued it before it answers, so giving up early and trying again sends it twice."""

    def data(self, msg):
        timeout = self.sock.gettimeout()
        self.sock.settimeout(settings.CAREID_EMAIL_DATA_TIMEOUT)
        try:
            return super().data(msg)
        finally:
            if self.sock:  # smtplib closes the connection on a socket error
                self.sock.settimeout(timeout)


class _SaysGoodbyeWithoutUndoingTheSend:
    """smtplib's QUIT, which Django sends once the server has answered for the message: the sending task's soft
    time limit (SoftTimeLimitExceeded) coming while it waits for the server's goodbye only closes the
    connection. Raised from here, it would count a message the server has taken as not sent, and it would go
    twice."""

    def quit(self):
        try:
            return super().quit()
        except SoftTimeLimitExceeded:
            self.close()


class _SMTP(_WaitsForTheEndOfData, _SaysGoodbyeWithoutUndoingTheSend, smtplib.SMTP):
    pass


class _SMTPSSL(_WaitsForTheEndOfData, _SaysGoodbyeWithoutUndoingTheSend, smtplib.SMTP_SSL):
    pass


class SMTPBackend(smtp.EmailBackend):
    """Django's SMTP backend (EMAIL_URL smtp://, smtp+tls://, smtp+ssl://), waiting CAREID_EMAIL_DATA_TIMEOUT for
    the reply to a message's data."""

    @property
    def connection_class(self):
        return _SMTPSSL if self.use_ssl else _SMTP

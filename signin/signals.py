"""What sign-in tells the parts above it (the OpenID Connect provider) without importing them."""

from django.dispatch import Signal

# Sent once the sessions are gone from the store: user, session_keys (list[str]), reason (str).
sessions_ended = Signal()

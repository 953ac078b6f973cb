"""What sign-in tells the parts above it (the OpenID Connect provider) without importing them."""

from django.dispatch import Signal

# Sent inside the transaction that ends them: user, sids (list[str], or None for every session of the
# person), reason (str). Receivers write what they owe (e.g. back-channel logouts) in that transaction.
sessions_ended = Signal()

# Sent inside the transaction that gives one of the person's sessions a new key (signing in again, a new
# password): user, before, after (the old and the new session key). Whatever follows a session by its
# key (the services' grants) follows it to the new one.
session_key_changed = Signal()

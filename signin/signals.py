"""What sign-in tells the parts above it (the OpenID Connect provider) without importing them."""

from django.dispatch import Signal

# Sent inside the transaction that ends them: user, sids (list[str], or None for every session of the
# person), reason (str). Receivers write what they owe (e.g. back-channel logouts) in that transaction.
sessions_ended = Signal()

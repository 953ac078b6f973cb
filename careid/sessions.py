"""Django's database session store (sessions live in PostgreSQL only: careid/settings.py says why),
with the round trips that a new session key costs cut to what its uniqueness needs.

A sign-in makes two new keys (the first step's session, and the new key when the person is signed
in) and drops one; Django's store spends a look-up before each INSERT and a SELECT before the DELETE.
"""

from __future__ import annotations

from django.contrib.sessions.backends import db
from django.contrib.sessions.backends.base import VALID_KEY_CHARS
from django.utils.crypto import get_random_string


class SessionStore(db.SessionStore):
    def _get_new_session_key(self) -> str:
        # No look-up first: create() inserts the key with must_create, so a key already taken fails the
        # INSERT on the primary key (CreateError) and create() draws another. The look-up only made a
        # clash that 32 random characters of 36 (about 2**165 keys) already make unheard of rarer, at a
        # query for every new session.
        return get_random_string(32, VALID_KEY_CHARS)

    def delete(self, session_key: str | None = None) -> None:
        """One DELETE (Django's store reads the row first, then deletes it)."""
        if session_key is None:
            if self.session_key is None:
                return
            session_key = self.session_key
        self.model.objects.filter(session_key=session_key).delete()

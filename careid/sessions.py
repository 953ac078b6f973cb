"""Django's database store (sessions live in PostgreSQL only: careid/settings.py says why), with the
round trips a session costs cut to one statement per change.

A sign-in makes two new keys (the first step's session, and the new key when the person is signed in)
and drops one. Django's store spends a look-up before each INSERT, a SELECT before the DELETE, a
transaction around every single-statement write, and, when the key changes, an INSERT of the data as
it was followed by an UPDATE with the data as the request leaves it.
"""

from __future__ import annotations

from contextlib import nullcontext

from django.contrib.sessions.backends import db
from django.contrib.sessions.backends.base import VALID_KEY_CHARS, CreateError, UpdateError
from django.db import IntegrityError, router, transaction
from django.utils.crypto import get_random_string


class SessionStore(db.SessionStore):
    def __init__(self, session_key: str | None = None) -> None:
        super().__init__(session_key)
        self._unwritten = False  # cycle_key() chose a key that the next save() inserts
        self._written: tuple[str, bytes] | None = None  # (key, data serialized) as this store last wrote them

    def _get_new_session_key(self) -> str:
        # No look-up first: create() inserts the key with must_create, so a key already taken fails the
        # INSERT on the primary key (CreateError) and create() draws another. The look-up only made a
        # clash that 32 random characters of 36 (about 2**165 keys) already make unheard of rarer, at a
        # query for every new session.
        return get_random_string(32, VALID_KEY_CHARS)

    def cycle_key(self) -> None:
        """A new key for the same data (signing in): the old row goes now, and the next save() inserts
        the new one with the data as it is then (Django's store inserts the data as it was, then updates it)."""
        data = self._session
        old = self.session_key
        if old:
            self.delete(old)
        self._session_key = self._get_new_session_key()
        self._session_cache = data
        self._unwritten = True
        self.modified = True

    def save(self, must_create: bool = False) -> None:
        """One statement: INSERT for a new key, UPDATE otherwise, nothing when this store already wrote
        the same data under the same key in this request (a flow that saves inside its transaction, then
        the middleware). An INSERT within a transaction fails it on a clash of keys, except when create()
        (which draws another key) asked for it; a key that cycle_key() chose may already be named
        elsewhere in that transaction, so drawing another would be wrong."""
        if self.session_key is None:
            return self.create()
        retry_clash = must_create and not self._unwritten
        must_create = must_create or self._unwritten
        data = self._get_session(no_load=must_create)
        written = (self.session_key, self.serializer().dumps(data))  # the stored form is signed with the time
        if not must_create and written == self._written:
            return
        obj = self.create_model_instance(data)
        using = router.db_for_write(self.model, instance=obj)
        if must_create:
            savepoint = retry_clash and transaction.get_connection(using).in_atomic_block
            try:
                with transaction.atomic(using=using) if savepoint else nullcontext():
                    obj.save(force_insert=True, using=using)
            except IntegrityError:
                raise CreateError from None
        elif not self.model.objects.using(using).filter(session_key=obj.session_key).update(
                session_data=obj.session_data, expire_date=obj.expire_date):
            raise UpdateError  # deleted meanwhile (signed out elsewhere): the middleware says so
        self._unwritten, self._written = False, written

    def delete(self, session_key: str | None = None) -> None:
        """One DELETE (Django's store reads the row first, then deletes it)."""
        if session_key is None:
            if self.session_key is None:
                return
            session_key = self.session_key
        if session_key == self.session_key:
            self._unwritten, self._written = False, None
        self.model.objects.filter(session_key=session_key).delete()

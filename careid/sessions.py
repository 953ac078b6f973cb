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
        self._unwritten = False  # cycle_key() chose a key that the next save() writes
        self._replaces: str | None = None  # the key whose row that save moves to the new key
        self._written: tuple[str, bytes] | None = None  # (key, data serialized) as this store last wrote them

    def _get_new_session_key(self) -> str:
        # No look-up first: create() inserts the key with must_create, so a key already taken fails the
        # INSERT on the primary key (CreateError) and create() draws another. The look-up only made a
        # clash that 32 random characters of 36 (about 2**165 keys) already make unheard of rarer, at a
        # query for every new session.
        return get_random_string(32, VALID_KEY_CHARS)

    def cycle_key(self) -> None:
        """A new key for the same data (signing in). The next save() moves the row to the new key with the
        data as it is then, in one UPDATE (Django's store inserts the new key with the data as it was,
        deletes the old row, then updates the new one); the old key is gone from then on."""
        data = self._session
        self._replaces = self._replaces if self._unwritten else self.session_key
        self._session_key = self._get_new_session_key()
        self._session_cache = data
        self._unwritten = True
        self.modified = True

    def save(self, must_create: bool = False) -> None:
        """One statement: INSERT for a new key (an UPDATE of the key for one cycle_key() chose), UPDATE
        otherwise, nothing when this store already wrote the same data under the same key in this request
        (a flow that saves inside its transaction, then the middleware). A clash of keys fails the
        transaction it happens in, except when create() (which draws another key) asked for the INSERT: a
        key that cycle_key() chose may already be named elsewhere in that transaction."""
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
        rows = self.model.objects.using(using)
        fields = {"session_data": obj.session_data, "expire_date": obj.expire_date}
        try:
            # A rotated session's row moves to its new key; a new session, or one whose old row was gone, is
            # inserted; any other is updated.
            moved = bool(self._replaces) and rows.filter(session_key=self._replaces).update(
                session_key=obj.session_key, **fields)
            if not moved and must_create:
                savepoint = retry_clash and transaction.get_connection(using).in_atomic_block
                with transaction.atomic(using=using) if savepoint else nullcontext():
                    obj.save(force_insert=True, using=using)
            elif not moved and not rows.filter(session_key=obj.session_key).update(**fields):
                raise UpdateError  # deleted meanwhile (signed out elsewhere): the middleware says so
        except IntegrityError:
            raise CreateError from None
        self._unwritten, self._replaces, self._written = False, None, written

    def delete(self, session_key: str | None = None) -> None:
        """One DELETE (Django's store reads the row first, then deletes it); deleting this store's own
        session also deletes the row a rotated key has not replaced yet."""
        if session_key is None:
            if self.session_key is None:
                return
            session_key = self.session_key
        keys = [session_key]
        if session_key == self.session_key:
            keys += [self._replaces] if self._replaces else []
            self._unwritten, self._replaces, self._written = False, None, None
        self.model.objects.filter(session_key__in=keys).delete()

"""Argon2id with the cost the deployment chooses (CAREID_ARGON2_TIME_COST, _MEMORY_COST, _PARALLELISM).

The algorithm name stays "argon2", so every stored Argon2 hash, whatever its parameters, is this
hasher's: it still verifies, and `must_update` is true when its parameters differ from the configured
ones, so Django's `User.check_password` re-hashes it with them after the next right password (the
password step of a sign-in, signin/flows.check_password_step).

The parameters are read from settings on every use (not fixed at import), so a test's settings
override and the hash made for an unknown address (Django's check_password against an unusable
hash, signin/flows.check_password_step) always follow them.
"""

from __future__ import annotations

import ctypes
import ctypes.util

from django.conf import settings
from django.contrib.auth.hashers import Argon2PasswordHasher
from django.core.exceptions import ImproperlyConfigured

# OWASP Password Storage Cheat Sheet: equally strong Argon2id settings, (memory KiB, iterations),
# parallelism 1. A configuration at least as costly as one of them on both counts is accepted.
OWASP_MINIMUMS = ((47104, 1), (19456, 2), (12288, 3), (9216, 4), (7168, 5))


def weaker_than_owasp(*, time_cost: int, memory_cost: int, parallelism: int) -> bool:
    """True when no OWASP minimum is met (memory and passes both at least its values)."""
    del parallelism  # more lanes neither add nor remove work per lane an attacker must do
    return not any(memory_cost >= memory and time_cost >= passes for memory, passes in OWASP_MINIMUMS)


def check_cost(*, time_cost: int, memory_cost: int, parallelism: int) -> None:
    """Refuse to start with a cost no OWASP minimum allows (CAREID_ARGON2_*)."""
    if parallelism < 1 or time_cost < 1 or memory_cost < 8 * parallelism:
        raise ImproperlyConfigured("CAREID_ARGON2_*: time and parallelism at least 1, memory at least 8 KiB a lane")
    if weaker_than_owasp(time_cost=time_cost, memory_cost=memory_cost, parallelism=parallelism):
        raise ImproperlyConfigured(
            f"CAREID_ARGON2_*: t={time_cost}, m={memory_cost} KiB is weaker than every OWASP minimum "
            "(m=47104 t=1, m=19456 t=2, m=12288 t=3, m=9216 t=4, m=7168 t=5)")


# glibc's mallopt() options (malloc.h).
_M_TRIM_THRESHOLD, _M_MMAP_MAX, _M_ARENA_MAX = -1, -4, -8


def _argon2_wipes_its_memory() -> bool:
    """libargon2 overwrites a hash's memory before freeing it (its FLAG_clear_internal_memory, on unless
    the library was built otherwise)."""
    from _argon2_cffi_bindings import _ffi

    try:
        return ctypes.c_int.in_dll(ctypes.CDLL(_ffi.__file__), "FLAG_clear_internal_memory").value == 1
    except (OSError, ValueError):
        return False


def keep_hash_memory(*, hashes_at_once: int, memory_kib: int | None = None) -> bool:
    """Let this process keep the memory of a finished password hash for the next one (glibc only).

    libargon2 mallocs the whole cost (64 MiB by default) for every hash and frees it after wiping it.
    glibc serves an allocation that large with mmap, so the kernel hands over (and zeroes) 16,384 new
    pages for each hash and takes them back after: a fifth of a check's CPU (README, "Password
    hashing"), none of it Argon2's own work. Here every thread allocates from the main heap (one arena),
    nothing is mmapped, and the heap keeps up to `hashes_at_once` hashes' memory when it is freed, so
    the next hash reuses pages already mapped. The memory a hash leaves is wiped by libargon2 before it
    is freed, as before. Costs: each web process keeps that memory ((hashes at once + 1) x the memory cost)
    for its lifetime, and one arena for all threads (a web worker's threads take turns on the GIL anyway).

    `memory_kib`: the largest memory cost hashed here (the configured one unless given). Call it before the
    process's threads first allocate, knowing how many hashes it runs at once: gunicorn's workers call it
    (deploy/gunicorn.conf.py); nothing does under another server, whose threads careid cannot know.
    False, and nothing changes, where the C library has no mallopt (musl, macOS) or libargon2 would not wipe
    the memory it frees."""
    if not _argon2_wipes_its_memory():
        return False
    try:
        mallopt = ctypes.CDLL(ctypes.util.find_library("c")).mallopt
    except (OSError, AttributeError, TypeError):
        return False
    keep = (hashes_at_once + 1) * (memory_kib or settings.CAREID_ARGON2_MEMORY_COST) * 1024  # KiB, all lanes
    options = ((_M_ARENA_MAX, 1), (_M_MMAP_MAX, 0), (_M_TRIM_THRESHOLD, min(keep, 2**31 - 1)))
    return all(mallopt(option, value) == 1 for option, value in options)


class CareIdArgon2PasswordHasher(Argon2PasswordHasher):
    """Django's Argon2id hasher with the cost from settings.

    harden_runtime stays Django's no-op (Argon2's runtime is not a simple function of its
    parameters): a wrong password against a hash made with other parameters than the configured
    ones takes that hash's time, not the configured time, until the person signs in once (README,
    "Password hashing").
    """

    @property
    def time_cost(self) -> int:  # type: ignore[override]
        return settings.CAREID_ARGON2_TIME_COST

    @property
    def memory_cost(self) -> int:  # type: ignore[override]
        return settings.CAREID_ARGON2_MEMORY_COST

    @property
    def parallelism(self) -> int:  # type: ignore[override]
        return settings.CAREID_ARGON2_PARALLELISM

"""Argon2id at the configured cost: the environment sets it, older hashes still verify and are
re-hashed at the next sign-in, and unknown addresses do the same work."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import uuid
from pathlib import Path
from urllib.parse import urlsplit

import pytest
import requests
from django.conf import settings
from django.contrib.auth.hashers import MD5PasswordHasher, check_password, get_hasher, make_password

from accounts.hashers import CareIdArgon2PasswordHasher
from accounts.models import User
from signin.throttle import BAD_CREDENTIALS

from .conftest import require, sign_in
from .served import gunicorn
from .test_settings import settings_with

HASHERS = ["accounts.hashers.CareIdArgon2PasswordHasher", "django.contrib.auth.hashers.PBKDF2PasswordHasher"]
APP = "/login/authenticator-app/"


def parameters(encoded: str) -> dict[str, int]:
    decoded = get_hasher("argon2").decode(encoded)
    return {name: decoded[name] for name in ("time_cost", "memory_cost", "parallelism")}


def hash_with(settings, password: str, *, time_cost: int, memory_cost: int, parallelism: int) -> str:
    """A hash as careid made it when it was configured with these parameters."""
    saved = settings.CAREID_ARGON2_TIME_COST, settings.CAREID_ARGON2_MEMORY_COST, settings.CAREID_ARGON2_PARALLELISM
    settings.CAREID_ARGON2_TIME_COST, settings.CAREID_ARGON2_MEMORY_COST = time_cost, memory_cost
    settings.CAREID_ARGON2_PARALLELISM = parallelism
    try:
        return make_password(password)
    finally:
        (settings.CAREID_ARGON2_TIME_COST, settings.CAREID_ARGON2_MEMORY_COST,
         settings.CAREID_ARGON2_PARALLELISM) = saved


@pytest.fixture
def argon2(settings):
    """Real Argon2id at the default m=64 MiB, t=3, p=1, instead of the suite's fast hashing."""
    settings.PASSWORD_HASHERS = HASHERS
    settings.CAREID_ARGON2_TIME_COST, settings.CAREID_ARGON2_MEMORY_COST, settings.CAREID_ARGON2_PARALLELISM = 3, 65536, 1
    return settings


# --- the environment sets the cost -------------------------------------------------------------

MAKE_HASH = ("import django; django.setup(); from django.contrib.auth.hashers import make_password; "
             "print(make_password('a long pass phrase'))")


def hash_made_with(env: dict[str, str]) -> str:
    import subprocess
    import sys

    from .test_settings import ROOT

    result = subprocess.run([sys.executable, "-c", MAKE_HASH], cwd=ROOT, capture_output=True, text=True,
                            env={"PATH": "/usr/bin:/bin", "DJANGO_SETTINGS_MODULE": "careid.settings", "SECRET_KEY": "k",
                                 "CAREID_AUDIT_CHAIN_KEY": "c", **env})
    return result.stdout.strip() or result.stderr


def test_the_default_is_argon2id_at_64_mib_3_passes_1_lane():
    assert settings_with({"SECRET_KEY": "k", "CAREID_AUDIT_CHAIN_KEY": "c"})["hashers"][0] == "accounts.hashers.CareIdArgon2PasswordHasher"
    assert hash_made_with({}).startswith("argon2$argon2id$v=19$m=65536,t=3,p=1$")


def test_the_environment_sets_time_memory_and_parallelism():
    encoded = hash_made_with({"CAREID_ARGON2_TIME_COST": "2", "CAREID_ARGON2_MEMORY_COST": "47104",
                              "CAREID_ARGON2_PARALLELISM": "2"})
    assert encoded.startswith("argon2$argon2id$v=19$m=47104,t=2,p=2$")


@pytest.mark.parametrize("env", [
    {"CAREID_ARGON2_MEMORY_COST": "8192"},  # 8 MiB at 3 passes: OWASP asks 12 MiB at 3
    {"CAREID_ARGON2_TIME_COST": "1", "CAREID_ARGON2_MEMORY_COST": "32768"},  # one pass needs 46 MiB
    {"CAREID_ARGON2_PARALLELISM": "0"},
])
def test_a_cost_below_owasps_minimums_refuses_to_start(env):
    assert "ImproperlyConfigured: CAREID_ARGON2_" in hash_made_with(env)


def test_any_of_owasps_equivalent_settings_is_accepted():
    assert "m=47104,t=1,p=1$" in hash_made_with({"CAREID_ARGON2_TIME_COST": "1", "CAREID_ARGON2_MEMORY_COST": "47104"})
    assert "m=9216,t=4,p=1$" in hash_made_with({"CAREID_ARGON2_TIME_COST": "4", "CAREID_ARGON2_MEMORY_COST": "9216"})


# --- older hashes ---------------------------------------------------------------------------------


def test_a_hash_of_other_parameters_verifies_and_is_upgraded_at_the_next_sign_in(client, person, argon2):
    # Django's own Argon2 defaults, which careid used before the cost was configurable.
    old = hash_with(argon2, person.password, time_cost=2, memory_cost=102400, parallelism=8)
    User.objects.filter(pk=person.user.pk).update(password=old)
    assert check_password(person.password, old) and get_hasher().must_update(old)

    response = client.post(APP, {"email": person.user.email, "password": "not the password"})
    assert response.status_code == 400
    person.user.refresh_from_db()
    assert person.user.password == old  # a wrong password changes nothing

    response = sign_in(client, person)
    assert response.status_code == 302 and response.url == "/"
    person.user.refresh_from_db()
    assert parameters(person.user.password) == {"time_cost": 3, "memory_cost": 65536, "parallelism": 1}
    assert person.user.check_password(person.password) and not get_hasher().must_update(person.user.password)
    assert client.get("/").status_code == 200  # the session made after the upgrade holds

    client.post("/logout/")
    again = person.user.password
    assert sign_in(client, person).status_code == 302
    person.user.refresh_from_db()
    assert person.user.password == again  # already at the configured cost: not re-hashed


def test_an_upgrade_keeps_the_persons_other_sessions(person, argon2):
    """Django's session check is made from the password hash, so a re-hash would end every other session of
    the person at its next request (no event, no word to their services). A password step alone does it,
    whoever passes it: the password is the same, so nobody is signed out."""
    from django.test import Client

    argon2.CAREID_ARGON2_TIME_COST, argon2.CAREID_ARGON2_MEMORY_COST = 2, 19456  # the cost before
    person.user.set_password(person.password)
    person.user.save(update_fields=["password"])
    ward_pc = Client()
    assert sign_in(ward_pc, person).status_code == 302

    argon2.CAREID_ARGON2_TIME_COST, argon2.CAREID_ARGON2_MEMORY_COST = 3, 65536  # the operator raises it

    elsewhere = Client(REMOTE_ADDR="203.0.113.9")
    assert elsewhere.post(APP, {"email": person.user.email, "password": person.password}).status_code == 302
    person.user.refresh_from_db()
    assert parameters(person.user.password) == {"time_cost": 3, "memory_cost": 65536, "parallelism": 1}

    assert ward_pc.get("/profile/").status_code == 200


def test_an_upgrade_while_signing_in_again_keeps_this_browsers_session(client, person, argon2):
    """Signed in, the person signs in again (a service's prompt=login, or before adding an authenticator) and
    the password step re-hashes: this browser's own session moved with the others in the database, then the
    request saved its copy, with the check made from the hash before, over it, and the next request was
    signed out, the sign-in again lost."""
    argon2.CAREID_ARGON2_TIME_COST, argon2.CAREID_ARGON2_MEMORY_COST = 2, 19456  # the cost before
    person.user.set_password(person.password)
    person.user.save(update_fields=["password"])
    assert sign_in(client, person).status_code == 302

    argon2.CAREID_ARGON2_TIME_COST, argon2.CAREID_ARGON2_MEMORY_COST = 3, 65536  # the operator raises it
    response = client.post(f"{APP}?goto=/profile/&reauth=1", {"email": person.user.email, "password": person.password})
    assert response.status_code == 302
    person.user.refresh_from_db()
    assert parameters(person.user.password) == {"time_cost": 3, "memory_cost": 65536, "parallelism": 1}
    response = client.post(f"{APP}code/?goto=/profile/", {"token": person.fresh_code()})
    assert response.status_code == 302 and response.url == "/profile/"
    assert client.get("/profile/").status_code == 200


def test_a_pbkdf2_hash_verifies_and_becomes_argon2id_at_the_next_sign_in(client, person, argon2):
    User.objects.filter(pk=person.user.pk).update(
        password=make_password(person.password, hasher="pbkdf2_sha256"))
    assert sign_in(client, person).status_code == 302
    person.user.refresh_from_db()
    assert person.user.password.startswith("argon2$argon2id$v=19$m=65536,t=3,p=1$")


# --- unknown addresses -----------------------------------------------------------------------------


@pytest.fixture
def hashes_made(monkeypatch) -> list[str]:
    """Every hash the configured hashers make while the test runs (a spy: the real hasher still works)."""
    made: list[str] = []
    for hasher in (CareIdArgon2PasswordHasher, MD5PasswordHasher):
        def spy(self, password, salt, *, encode=hasher.encode):
            encoded = encode(self, password, salt)
            made.append(encoded)
            return encoded

        monkeypatch.setattr(hasher, "encode", spy)
    return made


def test_an_unknown_address_costs_a_hash_at_the_configured_parameters(client, db, argon2, hashes_made):
    response = client.post(APP, {"email": "nobody.here@nhs.net", "password": "a guess at a password"})
    assert response.status_code == 400
    assert [parameters(encoded) for encoded in hashes_made] == [{"time_cost": 3, "memory_cost": 65536, "parallelism": 1}]

    argon2.CAREID_ARGON2_TIME_COST, argon2.CAREID_ARGON2_MEMORY_COST = 1, 47104
    hashes_made.clear()
    response = client.post(APP, {"email": "nobody.here@nhs.net", "password": "a guess at a password"})
    assert response.status_code == 400
    assert [parameters(encoded) for encoded in hashes_made] == [{"time_cost": 1, "memory_cost": 47104, "parallelism": 1}]


def test_an_unknown_address_follows_a_change_of_hasher(client, db, settings, hashes_made):
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
    assert client.post(APP, {"email": "nobody.here@nhs.net", "password": "a guess"}).status_code == 400
    assert [encoded.split("$")[0] for encoded in hashes_made] == ["md5"]
    settings.PASSWORD_HASHERS = HASHERS  # MD5 no longer known: the work is Argon2id's, not an error
    hashes_made.clear()
    assert client.post(APP, {"email": "nobody.here@nhs.net", "password": "a guess"}).status_code == 400
    assert [encoded.split("$")[1] for encoded in hashes_made] == ["argon2id"]


# What a web process does with a hash's memory (deploy/gunicorn.conf.py's post_worker_init): run in a process
# of its own, as gunicorn runs a worker, checking a password twice on a thread of its own, as gunicorn's
# threads do. It prints the page faults of the second check: the pages the kernel had to hand over (and zero)
# for it.
WEB_PROCESS_CHECKS = """
import resource, threading
import careid.wsgi
from django.conf import settings
from django.contrib.auth.hashers import check_password, make_password
from accounts.hashers import keep_hash_memory

if settings.CAREID_ARGON2_KEEP_MEMORY:
    keep_hash_memory(hashes_at_once=1)

encoded = make_password("a pass phrase for this test only")
faults = []

def two_checks():
    assert check_password("a pass phrase for this test only", encoded)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    assert check_password("a pass phrase for this test only", encoded)
    faults.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)

thread = threading.Thread(target=two_checks)
thread.start()
thread.join()
print(faults[0])
"""


def second_check_faults(keep_memory: bool) -> int:
    env = {**os.environ, "CAREID_ARGON2_KEEP_MEMORY": str(keep_memory).lower(), "CAREID_ARGON2_MEMORY_COST": "65536",
           "CAREID_ARGON2_TIME_COST": "1", "DJANGO_SETTINGS_MODULE": "careid.settings"}
    done = subprocess.run([sys.executable, "-c", WEB_PROCESS_CHECKS], env=env, cwd=settings.BASE_DIR,
                          capture_output=True, text=True, timeout=60, check=True)
    return int(done.stdout.split()[-1])


def test_a_web_process_reuses_the_memory_of_a_finished_hash_for_the_next():
    """libargon2 allocates the whole memory cost for every hash: freed to the kernel, each check faults in
    64 MiB of new pages (16,384 of 4 KiB; a fifth of a check's CPU). Kept, the next check faults in none."""
    pages = 65536 // 4
    assert second_check_faults(keep_memory=False) >= pages // 512  # at least one fault per 2 MiB, huge pages or not
    assert second_check_faults(keep_memory=True) < pages // 512


# --- gunicorn's workers: memory kept for as many hashes as a worker runs at once ----------------------


def _minor_faults(pid: int) -> int:
    return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[7])


def _memory_kib(pid: int, field: str) -> int:
    """A process's memory from /proc/PID/status, e.g. VmRSS (now) or VmHWM (its peak), in KiB."""
    line = next(line for line in Path(f"/proc/{pid}/status").read_text().splitlines() if line.startswith(f"{field}:"))
    return int(line.split()[1])


@pytest.mark.services
def test_a_gunicorn_worker_keeps_memory_for_the_hashes_of_all_its_threads(transactional_db):
    """Threads set on gunicorn's command line, not as the environment says (CAREID_THREADS, which
    deploy/gunicorn.conf.py reads): the worker takes three connections, and its three threads check three
    passwords at once (three sign-ins
    with unknown addresses), and the memory of all three is kept for the next three. Sized by the environment
    (one thread), all of it was given back to the kernel after every round and mapped again in the next:
    49,000 page faults a round instead of a few dozen."""
    from django.db import connection

    require(connection.vendor == "postgresql", "PostgreSQL (DATABASE_URL)")
    env = {**os.environ, "DATABASE_URL": urlsplit(os.environ["DATABASE_URL"])._replace(
               path="/" + connection.settings_dict["NAME"]).geturl(),  # the test database, committed to
           "CAREID_WORKERS": "1", "CAREID_THREADS": "1",
           "CAREID_SECURE_COOKIES": "false", "CAREID_ARGON2_KEEP_MEMORY": "true",
           "CAREID_ARGON2_MEMORY_COST": "65536", "CAREID_ARGON2_TIME_COST": "3",
           "CAREID_IP_FAILURE_LIMIT": "1000000"}  # its counter on the shared Redis outlives the test
    # Its connections follow (deploy/gunicorn.conf.py): taking one at a time, the worker would run one hash at a time.
    with gunicorn(env, "--threads", "3") as (url, server):
        worker = int(Path(f"/proc/{server.pid}/task/{server.pid}/children").read_text().split()[0])
        token = requests.get(f"{url}/login/", timeout=10).cookies["csrftoken"]

        def three_at_once() -> int:
            """The worker's page faults over three sign-ins sent at once."""
            start, answers = threading.Barrier(3), []

            def sign_in() -> None:
                start.wait()
                answers.append(requests.post(f"{url}{APP}", cookies={"csrftoken": token}, timeout=30, data={
                    "email": f"nobody.{uuid.uuid4().hex}@nhs.net", "password": "a guess at a password",
                    "csrfmiddlewaretoken": token}))

            before = _minor_faults(worker)
            people = [threading.Thread(target=sign_in) for _ in range(3)]
            for person in people:
                person.start()
            for person in people:
                person.join()
            assert [(answer.status_code, BAD_CREDENTIALS in answer.text) for answer in answers] == [(400, True)] * 3
            return _minor_faults(worker) - before

        before = _memory_kib(worker, "VmRSS")
        three_at_once()  # maps the three hashes' memory
        # The worker ran the three at once (it took their three connections): its peak held three hashes' memory.
        assert _memory_kib(worker, "VmHWM") - before > 3 * 65536 * 0.9
        three_at_once()  # and the threads' own first allocations (tens of pages)
        assert three_at_once() < 3 * (65536 // 4) // 512  # fewer than one fault per 2 MiB, huge pages or not

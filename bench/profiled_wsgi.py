"""careid's WSGI application with a per-request account, for bench/signin_load.py --profile DIR.

Not for production. Each request appends one tab-separated line to DIR/<pid>.tsv when it ends:
the time it ended (time.monotonic, comparable across the processes), method, the view's url name,
status, wall ms, its thread's CPU ms (time.thread_time: this request's own work, not its neighbours'),
queries and their wall ms, the password hash's thread CPU ms and wall ms (Django's check_password on
the Argon2 hasher) and how many hashes this process had in flight when it began (including itself).
"""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path

from django.contrib.auth import hashers
from django.db import connection
from django.urls import Resolver404, resolve

from careid.wsgi import application as careid_application

_DIRECTORY = Path(os.environ["CAREID_PROFILE_DIR"])
_local = threading.local()
_lock = threading.Lock()
_in_flight = [0]
_out = None


def _line(text: str) -> None:
    global _out
    with _lock:
        if _out is None:
            _out = (_DIRECTORY / f"{os.getpid()}.tsv").open("a", buffering=1)
        _out.write(text)


_verify = hashers.Argon2PasswordHasher.verify


def _timed_verify(self, password: str, encoded: str) -> bool:
    with _lock:
        _in_flight[0] += 1
        at_once = _in_flight[0]
    cpu, wall = time.thread_time(), time.perf_counter()
    try:
        return _verify(self, password, encoded)
    finally:
        account = getattr(_local, "account", None)
        if account is not None:
            account["hash_cpu"] += time.thread_time() - cpu
            account["hash_wall"] += time.perf_counter() - wall
            account["hashes_at_once"] = max(account["hashes_at_once"], at_once)
        with _lock:
            _in_flight[0] -= 1


hashers.Argon2PasswordHasher.verify = _timed_verify


def _count_query(execute, sql, params, many, context):
    account = _local.account
    started = time.perf_counter()
    try:
        return execute(sql, params, many, context)
    finally:
        account["queries"] += 1
        account["query_wall"] += time.perf_counter() - started


def application(environ, start_response):
    account = _local.account = {"queries": 0, "query_wall": 0.0, "hash_cpu": 0.0, "hash_wall": 0.0,
                                "hashes_at_once": 0}
    status = ["-"]

    def starting(code, headers, *args):
        status[0] = code.split()[0]
        return start_response(code, headers, *args)

    cpu, wall = time.thread_time(), time.perf_counter()
    with connection.execute_wrapper(_count_query):
        body = careid_application(environ, starting)
        try:
            chunks = list(body)
        finally:
            if hasattr(body, "close"):
                body.close()
    cpu, wall = time.thread_time() - cpu, time.perf_counter() - wall
    try:
        name = resolve(environ.get("PATH_INFO", "/")).view_name
    except Resolver404:
        name = "-"
    _line(f"{time.monotonic():.4f}\t{environ['REQUEST_METHOD']}\t{name}\t{status[0]}\t{wall * 1000:.3f}\t"
          f"{cpu * 1000:.3f}\t{account['queries']}\t{account['query_wall'] * 1000:.3f}\t"
          f"{account['hash_cpu'] * 1000:.3f}\t{account['hash_wall'] * 1000:.3f}\t{account['hashes_at_once']}\n")
    _local.account = None
    return chunks

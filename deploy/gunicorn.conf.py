"""Production gunicorn settings: `gunicorn -c deploy/gunicorn.conf.py careid.wsgi`, behind a buffering
TLS proxy (nginx or similar).

Chosen with bench/signin_load.py (README, "Sign-ins under load"). A sign-in is CPU-bound: the
Argon2id check of the password is about four fifths of its CPU at the default cost, the rest Django, PostgreSQL and Redis work
over six requests.

- Threaded workers (gthread), one per core, two threads each: a request waiting on PostgreSQL or
  Redis leaves the core to the other thread, Argon2 releases the GIL while it hashes, and a long
  download (a million-row audit export streams for about a minute) keeps its worker alive, since
  the worker's heartbeat runs beside the request instead of behind it. More threads or workers only
  add database connections, memory (64 MiB per thread by default, kept for the next hash:
  CAREID_ARGON2_KEEP_MEMORY: post_worker_init below) and switching.
- A worker takes no more connections than it has threads (worker_connections = threads): requests
  beyond what the workers are running wait in the listen queue, oldest first, for whichever worker
  frees a thread. With gunicorn's default of 1000 a worker accepts every connection it can and queues
  them behind its own two threads: under overload some sign-ins then waited twice as long as the
  median, past the proxy's 60-second read timeout (a POST answered 504).
- So no keep-alive either: every response closes its connection (cheap from a proxy on the same
  network), and the proxy can never send a request on a connection gunicorn is just closing for
  being idle - a POST lost that way reaches the person as a 502 or a dropped connection.
- backlog: the listen queue holds the connections the proxy opens while every thread is busy; keep it
  above the proxy's concurrent upstream connections (the kernel caps it at net.core.somaxconn).
- Each thread keeps its own PostgreSQL connection (CAREID_CONN_MAX_AGE, default 60 s): workers x
  threads per instance, within PostgreSQL's max_connections over every instance and Celery worker.
"""

from __future__ import annotations

import multiprocessing
import os
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from gunicorn.arbiter import Arbiter
    from gunicorn.workers.base import Worker

bind = os.environ.get("CAREID_BIND", "0.0.0.0:8000")
worker_class = os.environ.get("CAREID_WORKER_CLASS", "gthread")
workers = int(os.environ.get("CAREID_WORKERS", multiprocessing.cpu_count()))
threads = int(os.environ.get("CAREID_THREADS", 2))
worker_connections = int(os.environ.get("CAREID_WORKER_CONNECTIONS", threads))


def _keepalive(worker_connections: int, threads: int) -> int:
    # Seconds an idle connection stays open for another request; 0 (no keep-alive) unless a worker may hold
    # more connections than it has threads (then set it above the proxy's idle timeout for its connections).
    return int(os.environ.get("CAREID_KEEPALIVE", 0 if worker_connections <= threads else 75))


keepalive = _keepalive(worker_connections, threads)
backlog = int(os.environ.get("CAREID_BACKLOG", 2048))
timeout = 60  # a worker silent this long is replaced (threaded workers answer beside a long request)
graceful_timeout = 30
# The TLS proxy's address, whose X-Forwarded-Proto gunicorn may trust (CAREID_TRUSTED_PROXY_COUNT for the client IP).
forwarded_allow_ips = os.environ.get("CAREID_PROXY_IPS", "127.0.0.1")
accesslog = "-"


def _given_on_command_line(server: Arbiter) -> set[str] | None:
    """The settings given on gunicorn's command line or in GUNICORN_CMD_ARGS, read as gunicorn reads them (both
    override this file); None when the command line is not gunicorn's (an application that embeds it)."""
    parser = server.cfg.parser()
    try:
        given = [parser.parse_args(), parser.parse_args(server.cfg.get_cmd_args_from_env())]
    except SystemExit:
        return None
    return {name for arguments in given for name, value in vars(arguments).items() if value is not None}


def _connections_follow_threads(server: Arbiter) -> None:
    """The connections and keep-alive follow the threads gunicorn really runs, `--threads` on its command line
    included, unless they are given themselves (CAREID_WORKER_CONNECTIONS and CAREID_KEEPALIVE, read again here
    for gunicorn's own `-e`; or on the command line): a worker that took fewer connections than it has threads
    would leave the rest idle. Before the workers start, and on each reload (SIGHUP reads this file and the
    command line again)."""
    given = _given_on_command_line(server)
    if given is None:
        return
    cfg = server.cfg
    if "worker_connections" not in given:
        cfg.set("worker_connections", int(os.environ.get("CAREID_WORKER_CONNECTIONS", cfg.threads)))
    if "keepalive" not in given:
        cfg.set("keepalive", _keepalive(cfg.worker_connections, cfg.threads))


on_starting = on_reload = _connections_follow_threads


def post_worker_init(worker: Worker) -> None:
    """Keep the memory of finished password hashes for the next (CAREID_ARGON2_KEEP_MEMORY), for as many as
    this worker runs at once as gunicorn runs it, `--threads` on its command line included (a threaded worker
    runs no more requests at once than it takes connections, which follow its threads above): sized for fewer,
    all of it is given back whenever more ran at once; for more, memory is held for nothing. Called once the
    application has loaded (Django's settings) and before the worker's threads start (with its first requests):
    glibc gives a thread its heap when it first allocates."""
    from django.conf import settings

    from accounts.hashers import keep_hash_memory

    if settings.CAREID_ARGON2_KEEP_MEMORY:
        keep_hash_memory(hashes_at_once=min(worker.cfg.threads, worker.cfg.worker_connections))

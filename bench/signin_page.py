"""Throughput of the sign-in page (/login/) against a bare Django form view (/bench/bare/).

Both URLs are served by one gunicorn (2 sync workers) on PostgreSQL, with DEBUG off, and loaded
alternately with wrk so that machine noise hits both equally. Target: the sign-in page serves at
least 0.8x the requests per second of the bare view. Every login method that exists is listed on both
(the passkey beta is switched on): Windows Hello, Security key, iPad app, Authenticator app, Passkey.

Run from the project root:  .venv/bin/python bench/signin_page.py [--rounds N] [--duration S] [--connections C]
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

import psycopg
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict, make_conninfo

PROJECT_DIR = Path(__file__).resolve().parent.parent
VENV_BIN = Path(sys.executable).parent
SIGNIN_PATH = "/login/"
BARE_PATH = "/bench/bare/"
SIGNIN_MARKER = "CIS2 Authentication"
TARGET_RATIO = 0.8
NOISY_SPREAD = 0.15  # per-round ratios further apart than this mean the machine was busy
WORKERS = 2  # the machine has 2 cores

# Services the caller may point elsewhere through the environment.
SERVICE_DEFAULTS = {
    "DATABASE_URL": "postgres://postgres@127.0.0.1:5432/careid_bench",
    "CACHE_URL": "redis://127.0.0.1:6379/15",
}
# Production-like settings (DEBUG off, secure cookies, persistent connections), but plain http on loopback.
BENCH_SETTINGS = {
    "DJANGO_SETTINGS_MODULE": "bench.settings",
    "SECRET_KEY": "bench-only-secret-key-not-used-anywhere-else",
    "CAREID_AUDIT_CHAIN_KEY": "bench-only-audit-chain-key-not-used-anywhere-else",
    "DEBUG": "false",
    "ALLOWED_HOSTS": "127.0.0.1",
    "CAREID_SSL_REDIRECT": "false",
    "CAREID_PASSKEY_BETA": "true",  # every login method that exists on the page
}
# What the sign-in page must list (CIS2's Smartcard and NHSmail do not exist in careid yet).
SIGNIN_METHODS = ["Windows Hello", "Security key", "iPad app", "Authenticator app", "Passkey (private beta)"]


def bench_environment() -> dict[str, str]:
    return {**SERVICE_DEFAULTS, **os.environ, **BENCH_SETTINGS}


def ensure_database(database_url: str) -> None:
    """Create the database DATABASE_URL names, if it does not exist yet."""
    params = conninfo_to_dict(database_url)
    name = params.get("dbname") or urlsplit(database_url).path.lstrip("/")
    if not name:
        raise SystemExit(f"DATABASE_URL names no database: {database_url}")
    with psycopg.connect(make_conninfo(database_url, dbname="postgres"), autocommit=True) as connection:
        exists = connection.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,)).fetchone()
        if not exists:
            connection.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
            print(f"created database {name}")


def migrate(environment: dict[str, str]) -> None:
    command = [sys.executable, "manage.py", "migrate", "--no-input", "-v", "0"]
    if subprocess.run(command, cwd=PROJECT_DIR, env=environment).returncode != 0:
        raise SystemExit("manage.py migrate failed (output above)")


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def fetch(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=10) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as error:
        return error.code, error.read().decode(errors="replace")


@contextmanager
def gunicorn(environment: dict[str, str], port: int, log_path: Path) -> Iterator[subprocess.Popen[bytes]]:
    """gunicorn serving the bench URLconf on 127.0.0.1:port; always stopped on exit."""
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [
                str(VENV_BIN / "gunicorn"),
                "careid.wsgi:application",
                "--bind",
                f"127.0.0.1:{port}",
                "--workers",
                str(WORKERS),
                "--worker-class",
                "sync",
                "--error-logfile",
                "-",
                "--log-level",
                "warning",
            ],
            cwd=PROJECT_DIR,
            env=environment,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        try:
            yield process
        finally:
            stop(process)


def stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is not None:
        return
    process.send_signal(signal.SIGTERM)  # gunicorn's graceful shutdown: the master stops its workers
    try:
        process.wait(timeout=15)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()


def wait_until_serving(process: subprocess.Popen[bytes], url: str, log_path: Path, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise SystemExit(f"gunicorn exited with {process.returncode}:\n{log_path.read_text()}")
        try:
            fetch(url)
            return
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            time.sleep(0.2)
    raise SystemExit(f"gunicorn did not answer within {timeout:.0f} s:\n{log_path.read_text()}")


def check_pages(base_url: str) -> None:
    """Measure only pages that render correctly: a fast error page would flatter either side."""
    for path, marker in ((SIGNIN_PATH, SIGNIN_MARKER), (BARE_PATH, 'name="csrfmiddlewaretoken"')):
        status, body = fetch(base_url + path)
        if status != 200:
            raise SystemExit(f"GET {path} answered {status}, expected 200")
        if marker not in body:
            raise SystemExit(f"GET {path} does not contain {marker!r}")
        missing = [label for label in SIGNIN_METHODS if label not in body]
        if missing:
            raise SystemExit(f"GET {path} does not list {missing}")
        radios = body.count('type="radio"')
        print(f"GET {path}: 200, {len(body.encode())} bytes, {radios} login methods")


REQUESTS_PER_SECOND = re.compile(r"^Requests/sec:\s+([\d.]+)", re.MULTILINE)
REQUEST_COUNT = re.compile(r"^\s*(\d+) requests in", re.MULTILINE)
NON_2XX = re.compile(r"Non-2xx or 3xx responses:\s+(\d+)")
SOCKET_ERRORS = re.compile(r"Socket errors:.*")


@dataclass(frozen=True)
class Measurement:
    requests_per_second: float
    # CPU the gunicorn workers spent per request: less sensitive than req/s to other load on the machine.
    worker_cpu_us_per_request: float


def worker_pids(master_pid: int) -> list[int]:
    return [int(pid) for pid in Path(f"/proc/{master_pid}/task/{master_pid}/children").read_text().split()]


def wait_for_workers(master_pid: int, timeout: float = 30) -> list[int]:
    deadline = time.monotonic() + timeout
    while len(workers := worker_pids(master_pid)) < WORKERS:
        if time.monotonic() > deadline:
            raise SystemExit(f"gunicorn started {len(workers)} of {WORKERS} workers")
        time.sleep(0.1)
    return workers


def cpu_seconds(pids: list[int]) -> float:
    """User + system CPU time of the processes (Linux /proc)."""
    ticks = 0
    for pid in pids:
        # Fields after the parenthesised command name start at field 3 (state); utime and stime are 14 and 15.
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        ticks += int(fields[11]) + int(fields[12])
    return ticks / os.sysconf("SC_CLK_TCK")


def wrk(url: str, duration: int, connections: int, workers: list[int]) -> Measurement:
    """Load url with wrk; refuses runs with error responses."""
    cpu_before = cpu_seconds(workers)
    result = subprocess.run(
        ["wrk", "-t1", f"-c{connections}", f"-d{duration}s", url],
        capture_output=True,
        text=True,
        check=True,
    )
    cpu = cpu_seconds(workers) - cpu_before
    non_2xx = NON_2XX.search(result.stdout)
    if non_2xx:
        raise SystemExit(f"{url}: {non_2xx.group(1)} non-2xx/3xx responses\n{result.stdout}")
    rate = REQUESTS_PER_SECOND.search(result.stdout)
    count = REQUEST_COUNT.search(result.stdout)
    if rate is None or count is None or int(count.group(1)) == 0:
        raise SystemExit(f"could not read the request rate from wrk:\n{result.stdout}{result.stderr}")
    socket_errors = SOCKET_ERRORS.search(result.stdout)
    if socket_errors:
        print(f"  ({url}: {socket_errors.group(0)})")
    return Measurement(float(rate.group(1)), cpu / int(count.group(1)) * 1e6)


def parse_arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=5, help="alternating rounds per URL (default 5)")
    parser.add_argument("--duration", type=int, default=5, help="seconds of wrk per URL per round (default 5)")
    parser.add_argument("--connections", type=int, default=8, help="wrk connections (default 8)")
    arguments = parser.parse_args()
    if arguments.rounds < 1 or arguments.duration < 1 or arguments.connections < 1:
        parser.error("--rounds, --duration and --connections must be at least 1")
    return arguments


def main() -> None:
    arguments = parse_arguments()
    if shutil.which("wrk") is None:
        raise SystemExit("wrk is not installed")
    environment = bench_environment()
    ensure_database(environment["DATABASE_URL"])
    migrate(environment)

    load_before = os.getloadavg()[0]  # other work on the machine skews req/s; worth knowing
    port = free_port()
    base_url = f"http://127.0.0.1:{port}"
    runs: dict[str, list[Measurement]] = {SIGNIN_PATH: [], BARE_PATH: []}
    with tempfile.TemporaryDirectory(prefix="careid-bench-") as scratch:
        log_path = Path(scratch) / "gunicorn.log"
        with gunicorn(environment, port, log_path) as process:
            wait_until_serving(process, base_url + SIGNIN_PATH, log_path)
            check_pages(base_url)
            workers = wait_for_workers(process.pid)
            # Warm-up: first requests compile templates and open database connections.
            for path in runs:
                wrk(base_url + path, 1, arguments.connections, workers)

            print(
                f"{arguments.rounds} rounds of wrk -t1 -c{arguments.connections} -d{arguments.duration}s per URL, "
                f"alternating; gunicorn {WORKERS} sync workers"
            )
            for round_number in range(1, arguments.rounds + 1):
                # Swap the order every round so neither URL always runs first.
                order = (SIGNIN_PATH, BARE_PATH) if round_number % 2 else (BARE_PATH, SIGNIN_PATH)
                for path in order:
                    runs[path].append(wrk(base_url + path, arguments.duration, arguments.connections, workers))
                signin, bare = runs[SIGNIN_PATH][-1], runs[BARE_PATH][-1]
                print(
                    f"round {round_number}: {SIGNIN_PATH} {signin.requests_per_second:7.1f} req/s "
                    f"({signin.worker_cpu_us_per_request:4.0f} us CPU/req)   "
                    f"{BARE_PATH} {bare.requests_per_second:7.1f} req/s "
                    f"({bare.worker_cpu_us_per_request:4.0f} us CPU/req)   "
                    f"ratio {signin.requests_per_second / bare.requests_per_second:.2f}"
                )
            if process.poll() is not None or worker_pids(process.pid) != workers:
                raise SystemExit(f"a gunicorn worker died during the run:\n{log_path.read_text()}")

    rate = {path: statistics.median(m.requests_per_second for m in measured) for path, measured in runs.items()}
    cpu = {path: statistics.median(m.worker_cpu_us_per_request for m in measured) for path, measured in runs.items()}
    # The verdict uses each round's own ratio: its two runs are seconds apart, so load from other work
    # that comes and goes hits both alike, whereas the two medians may come from differently loaded rounds.
    round_ratios = [
        signin.requests_per_second / bare.requests_per_second
        for signin, bare in zip(runs[SIGNIN_PATH], runs[BARE_PATH], strict=True)
    ]
    ratio = statistics.median(round_ratios)
    for path in runs:
        print(f"median {path}: {rate[path]:.1f} req/s, {cpu[path]:.0f} us worker CPU per request")
    verdict = "meets" if ratio >= TARGET_RATIO else "BELOW"
    print(f"ratio signin/bare: {ratio:.2f} (median of per-round ratios; {verdict} the {TARGET_RATIO}x target)")
    print(
        f"  ratio of the medians: {rate[SIGNIN_PATH] / rate[BARE_PATH]:.2f}; "
        f"from worker CPU per request: {cpu[BARE_PATH] / cpu[SIGNIN_PATH]:.2f}"
    )
    if max(round_ratios) - min(round_ratios) > NOISY_SPREAD:
        print(
            f"  warning: per-round ratios range {min(round_ratios):.2f}-{max(round_ratios):.2f}; "
            "other load on the machine? Rerun when it is quiet."
        )
    print(f"load average (1 min) before/after: {load_before:.2f} / {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()

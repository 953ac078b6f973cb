"""Bulk onboarding (manage.py onboard_users) against a raw COPY of the same rows, on PostgreSQL.

Generates N rows of an HR export, then in the same run and the same database:
  1. COPY: the users, their e-mail addresses and their audit events, pre-rendered in COPY format,
     loaded into tables equivalent to careid's (LIKE ... INCLUDING ALL: same columns, defaults,
     checks and unique indexes, plus the same foreign keys) in one transaction. The floor: what the
     database itself must do to store the rows.
  2. the command, as an operator runs it (a new process, so Django's start-up counts), into
     careid's empty tables; its peak RSS comes from the kernel (wait4).
  3. the command again on the same file (every row already exists: the idempotent re-run).
Prints users/s, the ratio command time / COPY time (target <= 3 at N = 100,000) and the peak
RSS (target <= 250 MB at N = 1,000,000).

Run from the project root:  .venv/bin/python bench/onboard.py N [--no-rerun]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
import tempfile
import time
import unicodedata
from datetime import UTC, datetime
from pathlib import Path

import psycopg

PROJECT_DIR = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(PROJECT_DIR))

from bench.signin_page import ensure_database, migrate  # noqa: E402

TARGET_RATIO = 3.0
TARGET_RSS_MB = 250
ENVIRONMENT = {
    "DATABASE_URL": "postgres://postgres@127.0.0.1:5432/careid_bench_onboard",
    **os.environ,
    "SECRET_KEY": "bench-only-secret-key-not-used-anywhere-else",
    "CAREID_AUDIT_CHAIN_KEY": "bench-only-audit-chain-key-not-used-anywhere-else",
    "DEBUG": "false",
    "CAREID_SSL_REDIRECT": "false",
    "DJANGO_SETTINGS_MODULE": "careid.settings",
}
FIRST_NAMES = ["Mary", "Florence", "Edith", "Mary Jane", "Aneurin", "Elizabeth", "John", "Kofi", "Priya", "Wei",
               "Olusegun", "Siobhan", "Zoë", "José", "Anne-Marie", "Mohammed"]
LAST_NAMES = ["Seacole", "Nightingale", "Cavell", "Bevan", "Garrett Anderson", "Snow", "Annan", "Patel", "Zhang",
              "O'Brien", "Ní Bhriain", "Brontë", "Smith", "Okafor", "Jones", "Williams"]
TITLES = ["", "", "Dr", "Mr", "Ms", "Mrs", "Prof"]
DOMAINS = ["nhs.net", "nhs.net", "nhs.net", "leedsth.nhs.uk", "gosh.nhs.uk"]
COPY_TABLES = {"user": "accounts_user", "address": "account_emailaddress", "event": "audit_auditevent"}


def generate(count: int, directory: Path, layout: dict[str, list[str]]) -> tuple[Path, dict[str, Path]]:
    """The CSV the command reads, and the same rows as careid stores them, in COPY format with the
    columns in `layout` order."""
    randomness = random.Random(4)
    now = datetime.now(UTC).isoformat()
    csv_path = directory / "staff.csv"
    copy_paths = {name: directory / f"{name}.copy" for name in COPY_TABLES}
    files = {name: path.open("w", encoding="utf-8") for name, path in copy_paths.items()}
    null = r"\N"
    with csv_path.open("w", encoding="utf-8", newline="") as staff:
        staff.write("email,title,first_name,last_name,uid,external_id\r\n")
        for number in range(1, count + 1):
            first, last = randomness.choice(FIRST_NAMES), randomness.choice(LAST_NAMES)
            local = unicodedata.normalize("NFKD", f"{first}.{last}".lower().replace(" ", "-").replace("'", ""))
            local = local.encode("ascii", "ignore").decode()  # addresses have ASCII local parts
            email = f"{local}.{number}@{randomness.choice(DOMAINS)}".lower()
            title = randomness.choice(TITLES)
            given_uid = str(900_000_000_000 + number) if number % 10 == 0 else ""  # staff moving from another system
            external_id = f"{20_000_000 + number}"
            staff.write(f"{email},{title},{first},{last},{given_uid},{external_id}\r\n")
            rows = {
                "user": {
                    "id": number, "password": "!" + randomness.getrandbits(128).to_bytes(16, "big").hex(),
                    "last_login": null, "is_superuser": "f", "uid": given_uid or str(100_000_000_000 + number),
                    "title": title, "first_name": first, "last_name": last, "email": email, "status": "active",
                    "is_staff": "f", "date_joined": now, "invited_at": null, "password_failures": 0,
                    "last_signin_failure_at": null, "password_blocked_until": null, "locked_at": null,
                    "code_failures": 0, "code_blocked_until": null, "lock_reason": "",
                    "external_id": external_id, "identity_assurance_level": 0,
                },
                "address": {"id": number, "email": email, "verified": "f", "primary": "t", "user_id": number},
                "event": {
                    "id": number, "at": now, "event": "user.onboarded", "outcome": "success", "ip": null,
                    "user_agent": "", "method": "", "aal": null, "actor_id": null, "subject_id": number,
                    "details": json.dumps({"run": 1, "line": number + 1, "email": email}, ensure_ascii=False),
                    # Not yet chained; the MAC careid writes with each event is as long as this one.
                    "seq": null, "chain_hash": "", "sealed_at": null,
                    "written_mac": randomness.getrandbits(256).to_bytes(32, "big").hex(),
                },
            }
            for name, values in rows.items():
                files[name].write("\t".join(str(values[column]) for column in layout[name]) + "\n")
    for file in files.values():
        file.close()
    return csv_path, copy_paths


def table_layout(connection: psycopg.Connection) -> dict[str, list[str]]:
    """The columns of careid's tables in order; the bench knows what careid stores in each."""
    known = {
        "user": {"id", "password", "last_login", "is_superuser", "uid", "title", "first_name", "last_name", "email",
                 "status", "is_staff", "date_joined", "invited_at", "password_failures", "last_signin_failure_at",
                 "password_blocked_until", "locked_at", "code_failures", "code_blocked_until", "lock_reason",
                 "external_id", "identity_assurance_level"},
        "address": {"id", "email", "verified", "primary", "user_id"},
        "event": {"id", "at", "event", "outcome", "ip", "user_agent", "method", "aal", "actor_id", "subject_id",
                  "details", "seq", "chain_hash", "sealed_at", "written_mac"},
    }
    layout = {name: columns(connection, table) for name, table in COPY_TABLES.items()}
    for name, table in COPY_TABLES.items():
        if set(layout[name]) != known[name]:
            raise SystemExit(f"{table} has changed shape ({layout[name]}): update bench/onboard.py to match")
    return layout


def connect() -> psycopg.Connection:
    return psycopg.connect(ENVIRONMENT["DATABASE_URL"], autocommit=True)


def columns(connection: psycopg.Connection, table: str) -> list[str]:
    return [name for (name,) in connection.execute(
        "SELECT column_name FROM information_schema.columns WHERE table_name = %s ORDER BY ordinal_position", (table,))]


def empty_careid_tables(connection: psycopg.Connection) -> None:
    connection.execute("TRUNCATE accounts_user, account_emailaddress, audit_auditevent RESTART IDENTITY CASCADE")
    connection.execute("VACUUM ANALYZE accounts_user")
    connection.execute("CHECKPOINT")


def time_raw_copy(connection: psycopg.Connection, copy_paths: dict[str, Path]) -> float:
    """COPY the pre-rendered rows into equivalent tables in one transaction; the seconds it took."""
    for name in COPY_TABLES:
        connection.execute(f"DROP TABLE IF EXISTS bench_copy_{name} CASCADE")
    for name, table in COPY_TABLES.items():
        connection.execute(f"CREATE TABLE bench_copy_{name} (LIKE {table} INCLUDING ALL)")
    # The foreign keys careid's tables have (LIKE does not copy them), as Django declares them.
    for table, column in (("address", "user_id"), ("event", "actor_id"), ("event", "subject_id")):
        connection.execute(f"ALTER TABLE bench_copy_{table} ADD FOREIGN KEY ({column}) REFERENCES bench_copy_user (id) "
                           "DEFERRABLE INITIALLY DEFERRED")
    connection.execute("CHECKPOINT")
    started = time.perf_counter()
    with connection.transaction():
        for name, table in COPY_TABLES.items():
            column_list = ", ".join(f'"{column}"' for column in columns(connection, table))
            with connection.cursor().copy(f"COPY bench_copy_{name} ({column_list}) FROM STDIN") as copy, \
                    copy_paths[name].open("rb") as rows:
                while block := rows.read(1 << 20):
                    copy.write(block)
    seconds = time.perf_counter() - started
    for name in COPY_TABLES:
        connection.execute(f"DROP TABLE bench_copy_{name} CASCADE")
    return seconds


def run_command(csv_path: Path) -> tuple[float, float, str]:
    """manage.py onboard_users in a new process: (seconds, peak RSS in MB, its output)."""
    started = time.perf_counter()
    process = subprocess.Popen(
        [sys.executable, "manage.py", "onboard_users", str(csv_path), "--operator", "bench"],
        cwd=PROJECT_DIR, env=ENVIRONMENT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
    )
    output = process.stdout.read().decode()
    _pid, status, usage = os.wait4(process.pid, 0)
    seconds = time.perf_counter() - started
    process.returncode = os.waitstatus_to_exitcode(status)
    if process.returncode != 0:
        raise SystemExit(f"onboard_users exited with {process.returncode}:\n{output}")
    return seconds, usage.ru_maxrss / 1024, output


def check_created(connection: psycopg.Connection, count: int) -> None:
    found = connection.execute(
        "SELECT (SELECT count(*) FROM accounts_user), (SELECT count(*) FROM account_emailaddress),"
        " (SELECT count(*) FROM audit_auditevent WHERE event = 'user.onboarded')").fetchone()
    if found != (count, count, count):
        raise SystemExit(f"expected {count} users, addresses and audit events; found {found}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("rows", type=int, help="how many rows to generate and import")
    parser.add_argument("--no-rerun", action="store_true", help="skip timing the re-run of the same file")
    arguments = parser.parse_args()
    if arguments.rows < 1:
        parser.error("rows must be at least 1")
    ensure_database(ENVIRONMENT["DATABASE_URL"])
    migrate(ENVIRONMENT)
    count = arguments.rows
    with tempfile.TemporaryDirectory(prefix="careid-bench-onboard-") as scratch, connect() as connection:
        started = time.perf_counter()
        csv_path, copy_paths = generate(count, Path(scratch), table_layout(connection))
        print(f"generated {count:,} rows ({csv_path.stat().st_size / 1e6:.1f} MB CSV) in "
              f"{time.perf_counter() - started:.1f} s")

        empty_careid_tables(connection)
        copy_seconds = time_raw_copy(connection, copy_paths)
        print(f"raw COPY of users, e-mail addresses and audit events: {copy_seconds:.2f} s "
              f"({count / copy_seconds:,.0f} rows/s)")

        empty_careid_tables(connection)
        command_seconds, peak_mb, output = run_command(csv_path)
        check_created(connection, count)
        print(f"onboard_users: {command_seconds:.2f} s ({count / command_seconds:,.0f} users/s), "
              f"peak RSS {peak_mb:.0f} MB")
        print("  " + "\n  ".join(line for line in output.splitlines() if not line.endswith("...")))

        ratio = command_seconds / copy_seconds
        print(f"ratio command / COPY: {ratio:.2f} ({'meets' if ratio <= TARGET_RATIO else 'ABOVE'} the "
              f"{TARGET_RATIO:g} target); peak RSS {peak_mb:.0f} MB "
              f"({'within' if peak_mb <= TARGET_RSS_MB else 'ABOVE'} {TARGET_RSS_MB} MB)")

        if not arguments.no_rerun:
            connection.execute("CHECKPOINT")
            rerun_seconds, rerun_mb, _output = run_command(csv_path)
            check_created(connection, count)
            print(f"re-run, every row exists: {rerun_seconds:.2f} s ({count / rerun_seconds:,.0f} rows/s), "
                  f"peak RSS {rerun_mb:.0f} MB, nothing created")
        print(f"load average (1 min): {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()

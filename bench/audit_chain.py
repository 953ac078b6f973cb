"""The audit trail's hash chain at scale: sealing and verifying 1,000,000 events.

Reuses bench/admin_lists.py's database (100,000 users, 1,000,000 audit events over 90 days, made
with COPY and reused while it holds those numbers). Unseals every event (as the database's superuser,
triggers off), then times, in this one process:
- baseline: reading every event's chained columns in seq/id order through the same streaming cursor;
- seal: chaining all of them (what the sealer does, here in one go instead of every ten seconds);
- verify: `verify_audit`'s check of the whole chain.
Prints seconds, events/s, and each against the plain read.

Run from the project root:  .venv/bin/python bench/audit_chain.py [--users N] [--events N]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

PROJECT_DIR = Path(__file__).resolve().parent.parent
if str(PROJECT_DIR) not in sys.path:
    sys.path.insert(0, str(PROJECT_DIR))

from bench.admin_lists import (  # noqa: E402
    BENCH_SETTINGS,
    DEFAULT_DATABASE_URL,
    SEED,
    Fill,
    check_loopback,
    fill,
    prepare_database,
    setup_django,
)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--users", type=int, default=100_000)
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--database-url", default=DEFAULT_DATABASE_URL)
    arguments = parser.parse_args()
    check_loopback(arguments.database_url)
    wanted = Fill(arguments.users, arguments.events, SEED)
    must_fill = prepare_database(arguments.database_url, wanted)
    # The fixture's events span 90 days and are all sealed now: for the check, sealing "stopped" that long.
    setup_django({**BENCH_SETTINGS, "DATABASE_URL": arguments.database_url,
                  "CAREID_AUDIT_SEAL_TOLERANCE": str(100 * 86400)})
    if must_fill:
        fill(wanted)

    from django.db import connection, transaction

    from audit import chain
    from audit.models import AuditEvent

    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute("SET LOCAL session_replication_role = replica")  # superuser: the triggers allow no unsealing
        cursor.execute("UPDATE audit_auditevent SET seq = NULL, chain_hash = '', sealed_at = NULL")
    with connection.cursor() as cursor:
        cursor.execute("VACUUM (ANALYZE) audit_auditevent")
    total = AuditEvent.objects.count()

    started = time.perf_counter()
    with transaction.atomic():
        read = sum(1 for _ in AuditEvent.objects.order_by("id").values_list(*chain.CONTENT).iterator(chunk_size=5000))
    baseline = time.perf_counter() - started

    started = time.perf_counter()
    sealed = chain.seal()  # in the sealer's own batches
    sealing = time.perf_counter() - started

    started = time.perf_counter()
    result = chain.verify()
    verifying = time.perf_counter() - started
    assert read == sealed == result.checked == total and result.ok, (read, sealed, result)

    print(f"\n{total:,} audit events (PostgreSQL {connection.pg_version // 10000}, this machine)")
    print(f"{'':<24}{'seconds':>9}{'events/s':>12}{'x plain read':>14}")
    for name, seconds in (("plain read (baseline)", baseline), ("seal (chain them all)", sealing),
                          ("verify (whole chain)", verifying)):
        print(f"{name:<24}{seconds:>9.1f}{total / seconds:>12,.0f}{seconds / baseline:>14.1f}")


if __name__ == "__main__":
    main()

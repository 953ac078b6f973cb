"""What each Argon2id setting costs per sign-in on this machine, and the sign-ins per core that follow.

Times Django's check_password with careid's hasher (accounts/hashers.py) at OWASP's equally strong
minimums, a few stronger settings and Django's defaults (careid's cost before it was configurable),
one process at a time, with the memory of a finished hash kept for the next as in careid's web processes
(deploy/gunicorn.conf.py; CAREID_ARGON2_KEEP_MEMORY=false for the library's own way): CPU and wall time per check
(median of --checks). The baseline row is the
configured cost (CAREID_ARGON2_*, careid's default unless set), measured in the same run: its checks
take turns with each setting's, so every setting's "x baseline" (its CPU per check over the baseline's
in the same turns) holds however busy the machine is. Capacity per core is
1 / (hash CPU + the rest of a sign-in's CPU), the rest (--overhead, ms) measured by
bench/signin_load.py under load (its "not the hash" line); "hash share" is hash / (hash + the rest),
the ratio of issue 9's target (sign-ins/s against pure hash checks/s) on cores that do nothing else.

Run from the project root:  .venv/bin/python bench/argon2_costs.py [--checks N] [--overhead MS]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

PROJECT_DIR = Path(__file__).resolve().parent.parent
if str(PROJECT_DIR) not in sys.path:
    sys.path.insert(0, str(PROJECT_DIR))

# (memory KiB, passes, lanes, what it is)
SETTINGS = [
    (19456, 2, 1, "OWASP"),
    (12288, 3, 1, "OWASP"),
    (9216, 4, 1, "OWASP"),
    (7168, 5, 1, "OWASP"),
    (47104, 1, 1, "OWASP"),
    (47104, 2, 1, "stronger"),
    (65536, 3, 1, "RFC 9106's second setting; careid's default"),
    (102400, 2, 8, "Django's default, careid's before issue 9"),
]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checks", type=int, default=15, help="checks per setting (default 15)")
    parser.add_argument("--overhead", type=float, default=32.0,
                        help="CPU ms of a sign-in besides the hash (bench/signin_load.py; default 32)")
    arguments = parser.parse_args()
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "careid.settings")
    os.environ.setdefault("SECRET_KEY", "bench-only")
    os.environ.setdefault("CAREID_AUDIT_CHAIN_KEY", "bench-only")
    import django

    django.setup()
    from django.conf import settings
    from django.contrib.auth.hashers import check_password, make_password

    from accounts.hashers import keep_hash_memory

    settings.PASSWORD_HASHERS = ["accounts.hashers.CareIdArgon2PasswordHasher"]
    # As a web process hashes (deploy/gunicorn.conf.py); CAREID_ARGON2_KEEP_MEMORY=false for the library's own way.
    kept = settings.CAREID_ARGON2_KEEP_MEMORY and keep_hash_memory(
        hashes_at_once=1, memory_kib=max(settings.CAREID_ARGON2_MEMORY_COST, *(row[0] for row in SETTINGS)))
    baseline = (settings.CAREID_ARGON2_MEMORY_COST, settings.CAREID_ARGON2_TIME_COST, settings.CAREID_ARGON2_PARALLELISM)

    def use(memory: int, passes: int, lanes: int) -> None:
        settings.CAREID_ARGON2_MEMORY_COST, settings.CAREID_ARGON2_TIME_COST = memory, passes
        settings.CAREID_ARGON2_PARALLELISM = lanes

    def check(encoded: str) -> tuple[float, float]:
        cpu_start, wall_start = time.process_time(), time.perf_counter()
        assert check_password("a pass phrase to check", encoded)
        return time.process_time() - cpu_start, time.perf_counter() - wall_start

    use(*baseline)
    baseline_hash = make_password("a pass phrase to check")
    rows = [(*baseline, "baseline: the configured cost")] + [row for row in SETTINGS if row[:3] != baseline]
    load_before = os.getloadavg()[0]
    print(f"{'m (MiB)':>8} {'t':>2} {'p':>2}  {'CPU ms':>7} {'wall ms':>8} {'x baseline':>10}  "
          f"{'sign-ins/s per core':>19} {'hash share':>10}   setting")
    for memory, passes, lanes, what in rows:
        use(memory, passes, lanes)
        encoded = make_password("a pass phrase to check")
        cpu, wall, baseline_cpu = [], [], []
        for _ in range(arguments.checks):  # this setting's checks take turns with the baseline's
            use(memory, passes, lanes)
            seconds = check(encoded)
            cpu.append(seconds[0])
            wall.append(seconds[1])
            use(*baseline)
            baseline_cpu.append(check(baseline_hash)[0])
        hash_ms = statistics.median(cpu) * 1000
        print(f"{memory / 1024:>8.0f} {passes:>2} {lanes:>2}  {hash_ms:>7.1f} {statistics.median(wall) * 1000:>8.1f} "
              f"{statistics.median(cpu) / statistics.median(baseline_cpu):>10.2f}  "
              f"{1000 / (hash_ms + arguments.overhead):>19.1f} {hash_ms / (hash_ms + arguments.overhead):>10.2f}   {what}")
    print(f"capacity per core = 1000 / (hash CPU ms + {arguments.overhead:.0f} ms of the rest of a sign-in); "
          f"x baseline against Argon2id m={baseline[0]} KiB t={baseline[1]} p={baseline[2]} in the same run; "
          f"each hash's memory {'kept for the next' if kept else 'freed'}; "
          f"load average (1 min) before/after: {load_before:.2f} / {os.getloadavg()[0]:.2f}")

if __name__ == "__main__":
    main()

"""The sessions that have ended: the back-channel logouts the demo received (a JSON-lines file) and
the sids of people who used "Log out" (one per line), both under DEMO_ERS_STATE_DIR.

Files, not process memory: gunicorn may run several workers, and a logout received by one must end
the demo session whichever worker serves that person's next request. And a signed-cookie session
cannot be deleted on the server: a copy of the cookie taken before "Log out" would still work, unless
its sid is remembered as ended. Appends hold an exclusive lock; a demo's handful of lines makes
reading the files on each request cheap enough.
"""

from __future__ import annotations

import fcntl
import json
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from django.conf import settings


@dataclass(frozen=True)
class ReceivedLogout:
    received_at: float
    sub: str
    sid: str
    jti: str


def _path() -> Path:
    return settings.DEMO_ERS_STATE_DIR / "backchannel-logouts.jsonl"


def _logged_out_path() -> Path:
    return settings.DEMO_ERS_STATE_DIR / "logged-out-sids"


def _lines(path: Path) -> list[str]:
    try:
        with open(path, encoding="utf-8") as file:
            fcntl.flock(file, fcntl.LOCK_SH)
            return [line for line in file.read().splitlines() if line.strip()]
    except FileNotFoundError:
        return []


def received() -> list[ReceivedLogout]:
    """Every back-channel logout received, oldest first."""
    return [ReceivedLogout(**json.loads(line)) for line in _lines(_path())]


def backchannel_sids() -> set[str]:
    return {logout.sid for logout in received()}


def logged_out_sids() -> set[str]:
    return set(_lines(_logged_out_path()))


def remember_logged_out(sid: str) -> None:
    path = _logged_out_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a", encoding="utf-8") as file:
        fcntl.flock(file, fcntl.LOCK_EX)
        file.write(sid + "\n")


def record(*, sub: str, sid: str, jti: str) -> bool:
    """Keep a verified logout token's facts; False when its jti was received before (a replay)."""
    path = _path()
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+", encoding="utf-8") as file:
        fcntl.flock(file, fcntl.LOCK_EX)
        file.seek(0)
        if any(json.loads(line).get("jti") == jti for line in file.read().splitlines() if line.strip()):
            return False
        file.write(json.dumps(asdict(ReceivedLogout(time.time(), sub, sid, jti))) + "\n")
    return True

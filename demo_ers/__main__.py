"""`python -m demo_ers`: serve the demo eRS with gunicorn at DEMO_ERS_BIND (default: the host and
port of DEMO_ERS_BASE_URL, http://127.0.0.1:8001). `make run` starts it beside careid."""

from __future__ import annotations

import os
import sys
from urllib.parse import urlsplit


def main() -> None:
    base = urlsplit(os.environ.get("DEMO_ERS_BASE_URL") or "http://127.0.0.1:8001")
    bind = os.environ.get("DEMO_ERS_BIND") or f"{base.hostname}:{base.port or 80}"
    os.execv(sys.executable, [
        sys.executable, "-m", "gunicorn", "demo_ers.wsgi", "--bind", bind,
        # Threads, not one sync worker: during the callback careid's token endpoint fetches this
        # service's /jwks.json, and careid POSTs back-channel logouts while a page may be loading.
        "--workers", "1", "--threads", "8", "--graceful-timeout", "5", "--log-level", "warning",
        "--access-logfile", "-", "--access-logformat", 'demo-ers %(h)s "%(r)s" %(s)s',
    ])


if __name__ == "__main__":
    main()

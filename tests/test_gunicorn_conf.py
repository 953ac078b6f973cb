"""deploy/gunicorn.conf.py as gunicorn itself reads it (its config file, command line and GUNICORN_CMD_ARGS) and
runs its hook before the workers start: the connections and keep-alive each worker is given."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

# gunicorn's own entry point, up to its arbiter's on_starting hook (it binds nothing and starts no worker).
SCRIPT = """
import json, sys
from gunicorn.app.wsgiapp import WSGIApplication
from gunicorn.arbiter import Arbiter
sys.argv = ["gunicorn", "-c", "deploy/gunicorn.conf.py", *json.loads(sys.argv[1]), "careid.wsgi"]
application = WSGIApplication("%(prog)s [OPTIONS] [APP_MODULE]")
arbiter = Arbiter(application)
application.cfg.on_starting(arbiter)
print(json.dumps([arbiter.cfg.threads, arbiter.cfg.worker_connections, arbiter.cfg.keepalive]))
"""


def served_with(arguments: list[str], **environment: str) -> tuple[int, int, int]:
    """(threads, connections, keep-alive seconds) of each worker gunicorn would start."""
    env = {name: value for name, value in os.environ.items()
           if not name.startswith(("CAREID_WORKER", "CAREID_THREADS", "CAREID_KEEPALIVE", "GUNICORN_"))}
    done = subprocess.run([sys.executable, "-c", SCRIPT, json.dumps(arguments)], env={**env, **environment},
                          capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 0, done.stderr
    return tuple(json.loads(done.stdout.splitlines()[-1]))


@pytest.mark.parametrize("arguments, environment, served", [
    ([], {}, (2, 2, 0)),
    ([], {"CAREID_THREADS": "4"}, (4, 4, 0)),
    # Threads on the command line bring their connections (one per thread: no keep-alive).
    (["--threads", "3"], {"CAREID_THREADS": "1"}, (3, 3, 0)),
    ([], {"GUNICORN_CMD_ARGS": "--threads 4"}, (4, 4, 0)),
    # What is given stays given, whatever it equals.
    (["--threads", "3", "--worker-connections", "1"], {"CAREID_THREADS": "1"}, (3, 1, 0)),
    (["--threads", "2", "--worker-connections", "4", "--keep-alive", "0"], {}, (2, 4, 0)),
    (["--threads", "2", "--worker-connections", "4"], {}, (2, 4, 75)),
    (["--threads", "3"], {"CAREID_WORKER_CONNECTIONS": "6"}, (3, 6, 75)),
    (["--threads", "3", "-e", "CAREID_WORKER_CONNECTIONS=6"], {}, (3, 6, 75)),
], ids=str)
def test_each_worker_takes_the_connections_its_threads_can_serve(arguments, environment, served):
    assert served_with(arguments, **environment) == served

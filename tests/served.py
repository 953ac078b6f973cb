"""careid served by a real gunicorn with the production settings (deploy/gunicorn.conf.py), for tests that need
its workers: other processes, their own database connections and memory."""

from __future__ import annotations

import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager

import pytest
import requests

from .conftest import ROOT, _free_port


@contextmanager
def gunicorn(env: dict[str, str], *arguments: str) -> Iterator[tuple[str, subprocess.Popen]]:
    """gunicorn on a free port with `env` and `arguments` after the config file's, once its sign-in page answers:
    (its address, the arbiter's process). Stopped at the end, its log's end printed (shown when a test fails)."""
    port = _free_port()
    log = tempfile.TemporaryFile("w+")  # not a pipe: failing pages log tracebacks, which would fill it
    server = subprocess.Popen([sys.executable, "-m", "gunicorn", "-c", "deploy/gunicorn.conf.py", *arguments,
                               "careid.wsgi"], cwd=ROOT, env={**env, "CAREID_BIND": f"127.0.0.1:{port}"},
                              stdout=subprocess.DEVNULL, stderr=log, text=True)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                if requests.get(f"{url}/login/", timeout=2).status_code == 200:
                    break
            except requests.RequestException:
                pass
            if server.poll() is not None:
                log.seek(0)
                pytest.fail(f"gunicorn exited: {log.read()}")
            if time.monotonic() > deadline:
                pytest.fail("gunicorn did not answer within 30 s")
            time.sleep(0.2)
        yield url, server
    finally:
        server.terminate()
        try:
            server.wait(timeout=15)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()
        # Pages that failed were logged with their tracebacks (what operators see), never shown.
        log.seek(0)
        print(log.read()[-5000:])
        log.close()

"""Where sign-in throttling survives a restart: per-account state lives in PostgreSQL; the per-IP
counters live in Redis, which keeps them across a restart when it runs as the README says production
must (append-only file, fsync every second). Each test starts and restarts a Redis of its own."""

from __future__ import annotations

import shutil
import subprocess
import time

import pytest
from django.core.cache import caches

from .conftest import _free_port, require

APP = "/login/authenticator-app/"
PRODUCTION_REDIS = ["--appendonly", "yes", "--appendfsync", "everysec", "--maxmemory-policy", "noeviction"]


class OwnRedis:
    def __init__(self, directory, flags: list[str]) -> None:
        self.directory, self.flags, self.port = directory, flags, _free_port()
        self.process: subprocess.Popen | None = None

    def start(self) -> None:
        self.process = subprocess.Popen(
            ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--dir", str(self.directory),
             "--save", "", *self.flags], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 10
        while subprocess.run(["redis-cli", "-p", str(self.port), "ping"], capture_output=True).stdout.strip() != b"PONG":
            assert time.monotonic() < deadline, "redis-server did not start"
            time.sleep(0.05)

    def restart(self) -> None:
        time.sleep(1.1)  # appendfsync everysec: what was counted up to a second ago is on disk
        self.process.terminate()  # SIGTERM: Redis flushes its append-only file and exits
        self.process.wait(timeout=10)
        self.start()

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.kill()
            self.process.wait(timeout=10)


@pytest.fixture
def own_redis(tmp_path, settings):
    require(shutil.which("redis-server") is not None, "redis-server")
    servers = []

    def start(flags: list[str]) -> OwnRedis:
        server = OwnRedis(tmp_path / f"redis-{len(servers)}", flags)
        server.directory.mkdir()
        server.start()
        servers.append(server)
        settings.CACHES = {name: {**config, "LOCATION": f"redis://127.0.0.1:{server.port}/0"}
                           for name, config in settings.CACHES.items()}
        for name in settings.CACHES:
            caches[name].close()
        return server

    yield start
    for server in servers:
        server.stop()


def wrong_password(client, email: str) -> tuple[int, str]:
    """The status and page a person gets for a wrong password."""
    response = client.post(APP, {"email": email, "password": "guess"})
    return response.status_code, response.content.decode()


def fail_until_refused(client, settings) -> None:
    settings.CAREID_IP_FAILURE_LIMIT = 3
    for n in range(3):
        wrong_password(client, f"nobody{n}@nhs.net")
    status, page = wrong_password(client, "n9@nhs.net")
    assert status == 400 and "Too many failed attempts. Wait" in page


def test_per_ip_limits_survive_a_restart_of_redis_run_as_production_should(client, db, settings, fast_hashing, own_redis):
    require(settings.CACHES["default"]["BACKEND"] == "django_redis.cache.RedisCache", "a Redis cache (CACHE_URL)")
    redis = own_redis(PRODUCTION_REDIS)
    fail_until_refused(client, settings)
    redis.restart()
    status, page = wrong_password(client, "n8@nhs.net")
    assert status == 400 and "Too many failed attempts. Wait" in page
    assert "Enter a correct email address and password" not in page


def test_without_persistence_a_restart_forgets_them(client, db, settings, fast_hashing, own_redis):
    """Why the README asks for the append-only file: a Redis that keeps nothing forgets the counts."""
    require(settings.CACHES["default"]["BACKEND"] == "django_redis.cache.RedisCache", "a Redis cache (CACHE_URL)")
    redis = own_redis(["--appendonly", "no"])
    fail_until_refused(client, settings)
    redis.restart()
    status, page = wrong_password(client, "n8@nhs.net")  # an ordinary wrong password again, not refused
    assert status == 400 and "Enter a correct email address and password" in page
    assert "Too many failed attempts" not in page

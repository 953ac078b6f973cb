"""/health/ for load balancers and readiness probes (django-health-check).

It checks what a web process needs: the database (a new connection and SELECT 1), the throttle
cache (a write and a read: without it nobody can sign in) and the Celery broker (PING), all at once,
each bounded by that component's own timeouts (careid/settings.py), so the answer comes within about
CAREID_DB_CONNECT_TIMEOUT even when a component hangs. Celery workers are not checked: a web process
is worth keeping in service while the workers are down.

Everyone gets the status and one word: 200 "OK" or 503 "Unavailable". Which component failed and why
is never on the web (it would name hosts and errors to anyone who asks, and deciding who may see it
would need the session and the database, the very things being checked): it goes to the log
("health_check" logger), and operators run `python manage.py health_check health --no-http`.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

from django.conf import settings
from django.http import HttpRequest, HttpResponse
from health_check import Cache, Database
from health_check.base import HealthCheck
from health_check.contrib.redis import Redis
from health_check.views import HealthCheckView
from redis.asyncio import Redis as RedisClient
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff


def _broker_client() -> RedisClient:
    timeout = settings.CAREID_REDIS_TIMEOUT
    return RedisClient.from_url(settings.CELERY_BROKER_URL, socket_connect_timeout=timeout, socket_timeout=timeout,
                                retry=Retry(NoBackoff(), 0))  # redis-py would retry 3 times


class Health(HealthCheckView):
    def get_checks(self) -> Iterator[HealthCheck]:
        yield Database()
        yield Cache(alias="throttle")
        if settings.CELERY_BROKER_URL.startswith(("redis://", "rediss://")):
            yield Redis(client_factory=_broker_client)

    async def get(self, request: HttpRequest, *args, **kwargs) -> HttpResponse:
        with self.get_executor() as executor:
            self.results = await asyncio.gather(*(check.get_result(executor) for check in self.get_checks()))
        if any(result.error for result in self.results):
            return HttpResponse("Unavailable\n", status=503, content_type="text/plain; charset=utf-8")
        return HttpResponse("OK\n", content_type="text/plain; charset=utf-8")

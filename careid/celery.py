import os

from celery import Celery, signals
from celery.utils.log import get_logger

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "careid.settings")

app = Celery("careid")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()

logger = get_logger(__name__)


@signals.celeryd_after_setup.connect
def warn_of_a_pool_without_time_limits(sender, instance, **kwargs) -> None:
    """The outboxes' sends must be cut off before their claims run out (settings._send_time_limits), and
    only the prefork pool, the worker's default, enforces tasks' time limits."""
    from celery.concurrency import ALIASES
    from celery.concurrency.prefork import TaskPool as PreforkPool

    pool = instance.pool_cls  # the class, by the time the worker is set up
    if not (isinstance(pool, type) and issubclass(pool, PreforkPool)):
        path = f"{pool.__module__}:{pool.__qualname__}"
        name = next((alias for alias, target in ALIASES.items() if target == path), path)
        logger.warning(
            "--pool=%s does not enforce the tasks' time limits: an e-mail or back-channel logout stuck on a slow "
            "server keeps the worker, and its claim running out hands it to a second worker, which sends it again. "
            "Run the worker on its default pool, prefork.", name)

"""Moving the test database along one app's migrations, every other app at its latest, and back."""

from __future__ import annotations

from django.apps.registry import Apps
from django.db import connection
from django.db.migrations.executor import MigrationExecutor


def migrate(*targets: tuple[str, str]) -> Apps:
    """The apps of `targets` at the migrations given, every other app at its latest; the models as they are then."""
    executor = MigrationExecutor(connection)
    apps = {app for app, _ in targets}
    nodes = [node for node in executor.loader.graph.leaf_nodes() if node[0] not in apps] + list(targets)
    executor.migrate(nodes)
    executor.loader.build_graph()
    return executor.loader.project_state(nodes).apps


def migrate_to_latest() -> None:
    """Every app at its latest migration again (after a test that moved one back)."""
    executor = MigrationExecutor(connection)
    executor.migrate(executor.loader.graph.leaf_nodes())

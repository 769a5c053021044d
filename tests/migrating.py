"""Moving the test database to a migration and back, for the tests of data migrations."""

from collections.abc import Iterator

from django.apps.registry import Apps
from django.db import connection
from django.db.migrations.executor import MigrationExecutor


def migrate(target: tuple[str, str]) -> Apps:
    """Migrate to `target` (app label, migration name); returns the models as they are there."""
    executor = MigrationExecutor(connection)
    executor.migrate([target])
    return executor.loader.project_state([target]).apps


def at_migration(target: tuple[str, str]) -> Iterator[Apps]:
    """A fixture's body: the database at `target` for the test, then back at the latest."""
    yield migrate(target)
    executor = MigrationExecutor(connection)
    executor.migrate(executor.loader.graph.leaf_nodes())

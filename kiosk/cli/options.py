"""Options shared by several commands, and the one way they find the config and database.

The shared click options are decorators (sqlite-utils style).  :func:`open_store` is the
only place that turns ``--config``/``--db`` into a database connection.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING
from zoneinfo import ZoneInfo

import click

from kiosk.config import DEFAULT_PATH, DEFAULT_TIMEZONE, Config, find_config_path, load
from kiosk.exc import ConfigError

if TYPE_CHECKING:
    from kiosk.store import Store

CONTEXT = {"help_option_names": ["-h", "--help"]}

config_option = click.option(
    "--config", "-c", "config_path", metavar="PATH",
    help=f"Config file (default: $KIOSK_CONFIG, else {DEFAULT_PATH}).",
)
db_option = click.option("--db", "db_path", metavar="PATH",
                         help="Database file (default: [storage] path of the config).")


def load_config(config_path: str | None, db_path: str | None = None) -> Config | None:
    """The config named by ``--config`` / ``$KIOSK_CONFIG`` / the default path.

    None when only ``--db`` was given and no config can be read: the reading commands then
    work from the database alone, in :data:`~kiosk.config.DEFAULT_TIMEZONE`.
    """
    if db_path is None or config_path is not None or os.environ.get("KIOSK_CONFIG"):
        try:
            return load(find_config_path(config_path))
        except ConfigError:
            if db_path is None:
                raise
    return None


def locate(config_path: str | None, db_path: str | None) -> tuple[str, ZoneInfo, Config | None]:
    """(database path, local time zone, config or None) from the options."""
    cfg = load_config(config_path, db_path)
    if db_path is None:
        assert cfg is not None  # load_config raised otherwise
        db_path = cfg.storage.path
    return db_path, ZoneInfo(cfg.device.timezone if cfg else DEFAULT_TIMEZONE), cfg


def open_store(config_path: str | None, db_path: str | None, *, write: bool = False,
               create: bool = True) -> tuple[Store, ZoneInfo, Config | None]:
    """(store, local time zone, config or None).

    ``write``: a writing connection (creates and migrates the database if needed; safe
    beside the running daemon, each write is one short ``BEGIN IMMEDIATE`` transaction).
    Otherwise read-only, never creating anything.  ``create=False``: a missing database
    is an error also for writing.
    """
    from kiosk.store import Store

    path, tz, cfg = locate(config_path, db_path)
    if write and not create and not os.path.exists(path):
        Store.open_reader(path)  # raises the usual "no database yet" error
    if write and not os.path.exists(path):
        click.echo(f"note: {path} did not exist; creating a new database (the service user must "
                   f"be able to write it: run this as that user, e.g. sudo -u kiosk)", err=True)
    store = Store.open(path) if write else Store.open_reader(path)
    return store, tz, cfg

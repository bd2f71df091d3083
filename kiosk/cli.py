"""The ``kiosk`` command."""

from __future__ import annotations

import csv
import io
import json
import os
import sys
import time
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import click

from kiosk import __version__
from kiosk.config import DEFAULT_PATH, Config, find_config_path, load
from kiosk.exc import ConfigError, KioskError

CONTEXT = {"help_option_names": ["-h", "--help"]}

config_option = click.option(
    "--config", "-c", "config_path", metavar="PATH",
    help=f"Config file (default: $KIOSK_CONFIG, else {DEFAULT_PATH}).",
)
db_option = click.option("--db", "db_path", metavar="PATH",
                         help="Database file (default: [storage] path of the config).")


class KioskGroup(click.Group):
    """Turns our errors into one clear line and an exit status (2 for config errors)."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except KioskError as e:
            if ctx.obj and ctx.obj.get("debug"):
                raise
            for line in str(e).splitlines() or [type(e).__name__]:
                click.echo(f"kiosk: error: {line}", err=True)
            if isinstance(e, ConfigError) and len(e.problems) > 1:
                click.echo(f"kiosk: {len(e.problems)} problems in the configuration", err=True)
            ctx.exit(2 if isinstance(e, ConfigError) else 1)


@click.group(cls=KioskGroup, context_settings=CONTEXT)
@click.version_option(__version__, prog_name="kiosk")
@click.option("--debug", is_flag=True, envvar="KIOSK_DEBUG",
              help="Show tracebacks and debug logging.")
@click.pass_context
def cli(ctx: click.Context, debug: bool) -> None:
    """Visitor counter: door-sensor pulses to durable local counts and hourly uploads.

    Start with `kiosk demo` (no hardware needed), or `kiosk run --config FILE`.
    """
    ctx.ensure_object(dict)
    ctx.obj["debug"] = debug


def _config(config_path: str | None) -> Config:
    return load(find_config_path(config_path))


def _reader(config_path: str | None, db_path: str | None) -> tuple[Any, ZoneInfo, Config | None]:
    """Open the database read-only, from --db or the config."""
    from kiosk.store import Store

    cfg = None
    if db_path is None or config_path is not None or os.environ.get("KIOSK_CONFIG"):
        try:
            cfg = _config(config_path)
        except ConfigError:
            if db_path is None:
                raise
    path = db_path or cfg.storage.path
    tz = ZoneInfo(cfg.device.timezone if cfg else "Europe/Helsinki")
    return Store.open_reader(path), tz, cfg


# -- run / demo ------------------------------------------------------------------------------

@cli.command()
@config_option
@click.option("--speed", type=float, default=1.0, show_default=True,
              help="Run the clock N times faster (only when every sensor is simulated).")
@click.option("--db", "db_path", metavar="PATH", help="Override [storage] path.")
@click.pass_context
def run(ctx: click.Context, config_path: str | None, speed: float, db_path: str | None) -> None:
    """Run the counting daemon until SIGTERM or Ctrl-C.

    Counts are written every [storage] flush_interval_s; SIGTERM and Ctrl-C lose
    nothing, a kill -9 or power cut at most that interval.
    """
    path = find_config_path(config_path)
    cfg = load(path)
    if db_path:
        cfg = _with_db(cfg, db_path)
    _run_daemon(ctx, cfg, speed=speed, config_path=path, services=upload_services(cfg))


def upload_services(cfg: Config) -> list:
    """The uploader thread for the daemon, if the config has [upload]."""
    if cfg.upload is None:
        return []

    def make(daemon: Any) -> Any:
        from kiosk.store import Store
        from kiosk.upload import Uploader, UploadLock, UploadService

        store = Store.open(daemon.config.storage.path)
        return UploadService(Uploader(store, daemon.config, clock=daemon.clock),
                             UploadLock(daemon.config.storage.path))

    return [make]


def _with_db(cfg: Config, db_path: str) -> Config:
    from dataclasses import replace

    return replace(cfg, storage=replace(cfg.storage, path=db_path))


def _run_daemon(ctx: click.Context, cfg: Config, *, speed: float, config_path: str | None,
                services: list | None = None, clock: Any = None, quiet: bool = False) -> None:
    import logging

    from kiosk.clock import ScaledClock, SystemClock
    from kiosk.daemon import Daemon, setup_logging

    level = logging.WARNING if quiet else logging.INFO
    setup_logging(logging.DEBUG if ctx.obj.get("debug") else level)
    if speed != 1.0:
        if not cfg.all_simulated:
            raise ConfigError(
                f"--speed {speed:g} is only allowed when every sensor is simulated; "
                f"real sensors need the real clock"
            )
        if not 0 < speed <= 100_000:
            raise ConfigError(f"--speed must be between 0 and 100000, got {speed:g}")
        clock = clock or ScaledClock(speed=speed)
    else:
        clock = SystemClock()
    ctx.exit(Daemon(cfg, clock=clock, config_path=config_path, services=services).run())


@cli.command()
@click.option("--dir", "data_dir", default="kiosk-data", show_default=True, metavar="DIR",
              help="Where the demo keeps its databases (recreated on each run).")
@click.option("--speed", type=float, default=1800.0, show_default=True,
              help="Simulated seconds per real second (1800: an hour every 2 s).")
@click.option("--hours", type=float, default=None, help="Stop after this many simulated hours.")
@click.option("--start", "start_at", default=None, metavar="TIME",
              help="Simulated start time (default: 07:00 local time today).")
@click.pass_context
def demo(ctx: click.Context, data_dir: str, speed: float, hours: float | None,
         start_at: str | None) -> None:
    """Run the whole chain on this machine, no hardware or setup needed.

    Two simulated entrances count into a local database on an accelerated clock; the
    daemon uploads hourly totals to the reference receiver on 127.0.0.1, and each
    period is printed as the receiver accepts it.  Stop with Ctrl-C or --hours.
    """
    from kiosk.demo import run_demo

    ctx.exit(run_demo(data_dir=data_dir, speed=speed, hours=hours, start_at=start_at,
                      debug=bool(ctx.obj.get("debug"))))


@cli.command("check-config")
@click.argument("path", required=False)
def check_config(path: str | None) -> None:
    """Validate a config file without starting anything (exit status 2 if invalid)."""
    path = find_config_path(path)
    cfg = load(path)
    kinds = ", ".join(f"{s.id} ({s.type})" for s in cfg.sensors)
    where = f"uploads to {cfg.upload.url}" if cfg.upload else "no [upload]: counts are kept locally only"
    click.echo(f"{path}: OK: device {cfg.device.id} at {cfg.device.site}, sensors: {kinds}; {where}")


# -- status ----------------------------------------------------------------------------------

@cli.command()
@config_option
@db_option
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def status(config_path: str | None, db_path: str | None, as_json: bool) -> None:
    """What the counter is doing: daemon, sensors, today's counts, database.

    Reads the database only; safe while the daemon runs.
    """
    from kiosk.status import collect, render

    store, tz, cfg = _reader(config_path, db_path)
    with store:
        info = collect(store, tz=tz, config=cfg, now=time.time())
    click.echo(json.dumps(info, indent=2) if as_json else render(info))


# -- export ----------------------------------------------------------------------------------

@cli.command()
@config_option
@db_option
@click.option("--period", type=click.Choice(["15m", "1h", "1d"]), default="1h", show_default=True,
              help="Length of each row; 1d is a local day in device.timezone.")
@click.option("--since", default="today", show_default=True,
              help="Start: 2026-11-22 (local midnight), 2026-11-22T09:00 (local), "
                   "an ISO time with Z or offset, today, yesterday.")
@click.option("--until", default="now", show_default=True, help="End (exclusive), same forms.")
@click.option("--format", "fmt", type=click.Choice(["csv", "json"]), default="csv",
              show_default=True)
@click.option("--sensor", "sensors", multiple=True, help="Only this sensor id (repeatable).")
@click.option("--output", "-o", type=click.Path(dir_okay=False, writable=True), default="-",
              help="Write to a file instead of standard output.")
def export(config_path: str | None, db_path: str | None, period: str, since: str, until: str,
           fmt: str, sensors: tuple[str, ...], output: str) -> None:
    """Counts per sensor and period: sensor_id, start, end, in, out (UTC ISO 8601).

    Rows are sorted by sensor and start; periods in which the counter was running
    appear even with zero visits; periods it was off are left out.
    """
    from kiosk.periods import parse_time, totals

    store, tz, _cfg = _reader(config_path, db_path)
    with store:
        now = time.time()
        t0, t1 = parse_time(since, tz, now=now), parse_time(until, tz, now=now)
        if t1 <= t0:
            raise click.BadParameter(f"--until ({until}) must be after --since ({since})")
        rows = totals(store, t0, t1, period, tz, sensors or None)
    with click.open_file(output, "w", encoding="utf-8") as f:
        if fmt == "json":
            json.dump([r.as_dict() for r in rows], f, indent=1)
            f.write("\n")
        else:
            f.write(export_csv(rows))


def export_csv(rows: list) -> str:
    """CSV text with the header ``sensor_id,start,end,in,out``."""
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["sensor_id", "start", "end", "in", "out"])
    for r in rows:
        d = r.as_dict()
        w.writerow([d["sensor_id"], d["start"], d["end"], d["in"], d["out"]])
    return buf.getvalue()


# -- sync / receiver -------------------------------------------------------------------------

@cli.command()
@config_option
@click.option("--list-quarantined", is_flag=True, help="List totals the server refused (kept).")
@click.option("--retry-quarantined", is_flag=True,
              help="Queue refused totals again (as a new revision), then upload.")
@click.option("--wait", type=float, default=60.0, show_default=True,
              help="Seconds to wait for an upload the daemon is running.")
def sync(config_path: str | None, list_quarantined: bool, retry_quarantined: bool,
         wait: float) -> None:
    """Upload every closed period now, oldest first, and show what happened.

    Safe beside the running daemon (the two take turns through a lock file).
    Exit status 0 when the outbox is empty, 1 when something is left to send.
    """
    from kiosk.clock import SystemClock
    from kiosk.exc import UploadError
    from kiosk.upload import UploadLock, uploader_for

    cfg = _config(config_path)
    if cfg.upload is None:
        raise UploadError(f"{cfg.source} has no [upload] section: this kiosk keeps its counts "
                          f"locally and uploads nothing")
    with uploader_for(cfg, clock=SystemClock()) as up:
        if list_quarantined:
            rows = up.quarantined()
            if not rows:
                click.echo("no quarantined totals")
            for r in rows:
                click.echo(f"{r['sensor_id']} {r['start']}..{r['end']} in={r['in']} "
                           f"out={r['out']} revision={r['revision']}: {r['error']}")
            return
        lock = UploadLock(cfg.storage.path)
        if not lock.acquire(timeout=wait):
            raise UploadError(f"the daemon's upload did not finish within {wait:g} s; "
                              f"try again or raise --wait")
        try:
            if retry_quarantined:
                click.echo(f"{up.retry_quarantined()} quarantined total(s) queued again")
            outcome = up.cycle(health_due=True)
            b = up.backlog()
        finally:
            lock.release()
    if outcome is None and b["periods"] == 0:
        click.echo(f"uploaded: nothing left to send ({b['quarantined']} quarantined)")
        return
    if outcome is None:
        click.echo(f"uploaded a full round; {b['periods']} period(s) still to send, oldest "
                   f"{b['oldest']}: run `kiosk sync` again", err=True)
        raise SystemExit(1)
    click.echo(f"upload stopped: {outcome.message}", err=True)
    click.echo(f"{b['periods']} period(s) left to send, oldest {b['oldest']}; "
               f"{b['quarantined']} quarantined", err=True)
    raise SystemExit(1)


@cli.command()
@click.option("--port", type=int, default=8080, show_default=True, help="TCP port to listen on.")
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to bind.")
@click.option("--db", "db_path", default="receiver.db", show_default=True, metavar="PATH",
              help="Where the receiver stores what it accepts.")
@click.option("--token-file", type=click.Path(exists=True, dir_okay=False), default=None,
              help="Require this bearer token (default: accept any).")
@click.option("--show", is_flag=True, help="List what the receiver holds, then exit.")
def receiver(port: int, host: str, db_path: str, token_file: str | None, show: bool) -> None:
    """The reference receiver: a small statistics server for tests, demos and the city's
    server team (not a production server).  See docs/protocol.md."""
    from kiosk import receiver as rx

    if show:
        from tabulate import tabulate

        rows = rx.show(db_path)
        click.echo(tabulate([[r["device_id"], r["sensor_id"], r["start"], r["local_start"],
                              r["in"], r["out"], r["coverage"], r["revision"]] for r in rows],
                            headers=["device", "sensor", "start (UTC)", "local start", "in",
                                     "out", "coverage", "revision"]))
        s = rx.summary(db_path)
        click.echo(f"{s['periods']} periods, {s['in']} in, {s['out']} out; "
                   f"{s['requests']} requests {s['requests_by_status']}")
        return
    token = Path(token_file).read_text().strip() if token_file else None
    rx.serve_forever(db_path, host, port, token)


def _register_staff_commands() -> None:
    from kiosk.annotations import annotate_command
    from kiosk.importer import import_command
    from kiosk.journal import log_command
    from kiosk.report import report_command

    for command in (report_command, log_command, import_command, annotate_command):
        cli.add_command(command)


_register_staff_commands()


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``kiosk`` script; returns the exit status."""
    try:
        rv = cli.main(args=argv, prog_name="kiosk", standalone_mode=False)
        return rv if isinstance(rv, int) else 0
    except click.exceptions.Exit as e:
        return e.exit_code
    except click.exceptions.Abort:
        click.echo("Aborted.", err=True)
        return 1
    except click.ClickException as e:
        e.show()
        return e.exit_code
    except BrokenPipeError:
        sys.stderr.close()
        return 1


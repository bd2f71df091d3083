"""``kiosk status`` and ``kiosk export``: what the counter is doing, and its counts."""

from __future__ import annotations

import csv
import io
import json
import time

import click

from kiosk.cli.options import CONTEXT, config_option, db_option, open_store
from kiosk.periods import TIME_FORMS


@click.command(context_settings=CONTEXT)
@config_option
@db_option
@click.option("--json", "as_json", is_flag=True,
              help="Machine-readable output; long messages are kept whole.")
def status(config_path: str | None, db_path: str | None, as_json: bool) -> None:
    """What the counter is doing: daemon, sensors, today's counts, database, uploads.

    Reads the database only; safe while the daemon runs.  On a terminal the lines fit
    its width (long messages wrap or end in …; --json keeps them whole).

    \b
    Exit status, for monitoring (like systemctl is-active):
      0  all well: the daemon runs and writes, sensors work, uploads flow
      3  the daemon is stopped (or never started)
      4  the daemon is stalled: alive, but no write for a while
      5  the daemon runs but its writes fail (e.g. the disk is full)
      6  a sensor is down or stuck
      7  uploads are paused (e.g. the server refused the token)
    When several apply, the first in this list is given; 1 and 2 mean errors.
    """
    from kiosk.status import collect, render, store_now

    store, tz, cfg = open_store(config_path, db_path)
    with store:
        info = collect(store, tz=tz, config=cfg, now=store_now(store, real_now=time.time()))
    if as_json:
        click.echo(json.dumps(info, indent=2, ensure_ascii=False))
    else:
        click.echo(render(info, width=output_width()))
    click.get_current_context().exit(info["health"]["exit_code"])


def output_width() -> int:
    """The terminal's width when standard output is one ($COLUMNS, else the terminal's own
    size), else no limit: a pipe or a file gets whole lines."""
    import shutil
    import sys

    if sys.stdout.isatty():
        return shutil.get_terminal_size().columns
    return 10_000


@click.command(context_settings=CONTEXT)
@config_option
@db_option
@click.option("--period", type=click.Choice(["15m", "1h", "1d"]), default="1h", show_default=True,
              help="Length of each row; 1d is a local day in device.timezone.")
@click.option("--since", default="today", show_default=True, metavar="TIME",
              help=f"Start: {TIME_FORMS}.")
@click.option("--until", default="now", show_default=True, metavar="TIME",
              help="End (exclusive), same forms.")
@click.option("--format", "fmt", type=click.Choice(["csv", "json"]), default="csv",
              show_default=True)
@click.option("--sensor", "sensors", multiple=True, help="Only this sensor id (repeatable).")
@click.option("--output", "-o", type=click.Path(dir_okay=False, writable=True), default="-",
              help="Write to a file instead of standard output.")
def export(config_path: str | None, db_path: str | None, period: str, since: str, until: str,
           fmt: str, sensors: tuple[str, ...], output: str) -> None:
    """Counts per sensor and period: sensor_id, start, end, in, out (UTC ISO 8601).

    Rows are sorted by sensor and start; periods that were counted appear even with zero
    visits; periods nothing counted (counter off, nothing imported) are left out, never
    given as 0.  Each row also gives coverage (the counted fraction, 0-1) and imported
    (counts from `kiosk import`); `kiosk import` reads the CSV back, past those two.
    """
    from kiosk.periods import parse_time, totals
    from kiosk.status import store_now

    store, tz, _cfg = open_store(config_path, db_path)
    with store:
        now = store_now(store, real_now=time.time())
        t0, t1 = parse_time(since, tz, now=now), parse_time(until, tz, now=now)
        if t1 <= t0:
            raise click.BadParameter(f"--until ({until}) must be after --since ({since})")
        rows = totals(store, t0, t1, period, tz, sensors or None, with_imports=True)
    with click.open_file(output, "w", encoding="utf-8") as f:
        if fmt == "json":
            json.dump([r.as_dict() for r in rows], f, indent=1)
            f.write("\n")
        else:
            f.write(export_csv(rows))


def export_csv(rows: list) -> str:
    """CSV text with the header ``sensor_id,start,end,in,out,coverage,imported``."""
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["sensor_id", "start", "end", "in", "out", "coverage", "imported"])
    for r in rows:
        d = r.as_dict()
        w.writerow([d["sensor_id"], d["start"], d["end"], d["in"], d["out"], d["coverage"],
                    "yes" if d["imported"] else "no"])
    return buf.getvalue()



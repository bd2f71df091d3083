"""The staff commands: ``kiosk log``, ``kiosk annotate`` and ``kiosk import``."""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path

import click

from kiosk.annotations import (
    MAX_NOTE,
    AnnotationError,
    add,
    annotations_between,
    delete,
    parse_range,
    span_text,
)
from kiosk.cli.options import CONTEXT, config_option, db_option, locate, open_store
from kiosk.cli.uploads import ProgressLine
from kiosk.import_csv import SENSOR_ID, ImportProgress, ProgressCallback
from kiosk.importer import (
    ImportFileError,
    import_file,
    import_summary,
    imports,
    known_sensors,
    undo,
)
from kiosk.journal import KINDS, as_json, format_text, local_text, parse_when, query
from kiosk.periods import TIME_FORMS


def _split(values: Sequence[str]) -> list[str]:
    return [v.strip() for text in values for v in text.split(",") if v.strip()]


@click.command("log", context_settings=CONTEXT)
@config_option
@db_option
@click.option("--since", default="24h", show_default=True, metavar="TIME",
              help=f"From: {TIME_FORMS}.")
@click.option("--until", default=None, metavar="TIME", help="Up to (exclusive), same forms.")
@click.option("--level", type=click.Choice(["debug", "info", "warning", "error"],
                                           case_sensitive=False),
              default=None, help="Only this level and more severe ones (default: all).")
@click.option("--sensor", "sensors", multiple=True, metavar="ID",
              help="Only entries about this sensor (repeatable).")
@click.option("--kind", "kinds", multiple=True, metavar="KIND",
              help=f"Only this kind of entry (repeatable or comma-separated): {', '.join(KINDS)}.")
@click.option("--limit", type=click.IntRange(min=0), default=500, show_default=True,
              help="Show at most the newest N entries (0: all).")
@click.option("--format", "fmt", type=click.Choice(["text", "json"]), default="text",
              show_default=True)
def log_command(config_path: str | None, db_path: str | None, since: str, until: str | None,
                level: str | None, sensors: tuple[str, ...], kinds: tuple[str, ...], limit: int,
                fmt: str) -> None:
    """The local event journal: daemon starts and stops, sensor faults and recoveries,
    rejected serial lines, clock jumps, uploads, quarantines, config reloads, imports
    and annotations.

    Lines are in local time (device.timezone), newest last.  Reads the database only;
    safe while the daemon runs.  The daemon keeps [storage] journal_retention_days.
    """
    from kiosk.status import store_now, writes_failing

    store, tz, cfg = open_store(config_path, db_path)
    with store:
        now = store_now(store, real_now=time.time())
        daemon = store.meta("daemon") or {}
        failing = writes_failing(store.path, daemon.get("pid"))
        t0 = parse_when(since, tz, now=now)
        t1 = parse_when(until, tz, now=now) if until else None
        if t1 is not None and t1 <= t0:
            raise click.BadParameter(f"--until ({until}) must be after --since ({since})")
        rows, total = query(store, since=t0, until=t1, min_level=level, sensors=_split(sensors),
                            kinds=_split(kinds), limit=limit)
    if fmt == "json":
        click.echo(json.dumps(as_json(rows, tz), indent=1, ensure_ascii=False))
    elif not rows:
        filters = [f"--{name} {','.join(v) if isinstance(v, tuple) else v}"
                   for name, v in (("level", level), ("sensor", sensors), ("kind", kinds)) if v]
        what = f" matching {' '.join(filters)}" if filters else ""
        span = f" until {local_text(t1, tz)}" if t1 is not None else ""
        click.echo(f"no journal entries{what} since {local_text(t0, tz)}{span}")
    else:
        click.echo(format_text(rows, tz))
    if failing is not None and fmt == "text":
        held = failing.get("held") or {}
        click.echo(f"NOW: the daemon cannot write the database since "
                   f"{local_text(float(failing.get('since') or now), tz)}: {failing.get('error')}; "
                   f"{held.get('visitors_in', 0)} in, {held.get('visitors_out', 0)} out held in "
                   f"memory; entries since then are not in this journal yet")
    if total > len(rows):
        click.echo(f"(showing the newest {len(rows)} of {total} entries; use --limit 0 or a later "
                   f"--since for the rest)", err=True)
    if cfg is not None and t0 < now - cfg.storage.journal_retention_days * 86400:
        click.echo(f"(the journal keeps {cfg.storage.journal_retention_days} days; older entries "
                   f"are removed)", err=True)

@click.command("annotate", context_settings=CONTEXT)
@click.argument("when", required=False, metavar="DATE|RANGE")
@click.option("--closed", is_flag=True, help="The site (or --sensor's door) was closed.")
@click.option("--estimate", is_flag=True, help="The counts of the period are estimated.")
@click.option("--sensor-fault", is_flag=True, help="A sensor was faulty; the counts are doubtful.")
@click.option("--note", default=None, metavar="TEXT", help="Why (required when adding).")
@click.option("--sensor", "sensors", multiple=True, metavar="ID",
              help="Only this sensor (repeatable; default: the whole site).")
@click.option("--list", "list_", is_flag=True, help="List annotations and exit.")
@click.option("--since", default=None, metavar="TIME",
              help=f"With --list: only annotations ending after this: {TIME_FORMS}.")
@click.option("--delete", "delete_id", type=int, metavar="ID", help="Delete annotation ID and exit.")
@click.option("--format", "fmt", type=click.Choice(["text", "json"]), default="text",
              show_default=True, help="Output of --list.")
@config_option
@db_option
def annotate_command(when: str | None, closed: bool, estimate: bool, sensor_fault: bool,
                     note: str | None, sensors: tuple[str, ...], list_: bool, since: str | None,
                     delete_id: int | None, fmt: str, config_path: str | None,
                     db_path: str | None) -> None:
    """Mark a day or a period: closed (a holiday), counts estimated, or a sensor fault.

    DATE is a local day (2026-12-24, today, yesterday), RANGE whole local days
    (2026-12-24..2026-12-26, both included) or local times
    (2026-11-22T10:00..2026-11-22T12:00); ISO times with Z or an offset work too.
    Days follow device.timezone, so a DST day is 23 or 25 hours.

    Annotations appear in reports and are sent with uploads as quality flags.
    `kiosk annotate --list` shows them, `kiosk annotate --delete ID` removes one.
    """
    kinds = [k for k, on in (("closed", closed), ("estimate", estimate),
                             ("sensor-fault", sensor_fault)) if on]
    if list_ or delete_id is not None:
        if when or kinds or note or (list_ and delete_id is not None):
            raise click.UsageError("--list and --delete ID take no DATE|RANGE, kind or --note")
        if delete_id is not None:
            store, tz, _cfg = open_store(config_path, db_path, write=True, create=False)
            with store:
                a = delete(store, delete_id, tz=tz)
            click.echo(f"deleted annotation #{delete_id}: {a['kind']}, "
                       f"{a['sensor_id'] or 'whole site'}, {span_text(a['start'], a['end'], tz)}")
            return
        _list(config_path, db_path, since, sensors, fmt)
        return
    if not when:
        raise click.UsageError("give the DATE or RANGE to annotate (or --list / --delete ID)")
    if len(kinds) != 1:
        raise click.UsageError("give exactly one of --closed, --estimate, --sensor-fault")
    if note is None or not note.strip():
        raise click.UsageError('--note is required: say why, e.g. --note "closed for Christmas"')
    if len(note) > MAX_NOTE:
        raise click.UsageError(f"--note is longer than {MAX_NOTE} characters")
    store, tz, cfg = open_store(config_path, db_path, write=True)
    with store:
        start, end = parse_range(when, tz, now=time.time())
        known = known_sensors(store, [s.id for s in cfg.sensors] if cfg else None)
        for sid in sensors:
            if not SENSOR_ID.fullmatch(sid):
                raise AnnotationError(f"sensor id {sid!r} is not valid")
            if known and sid not in known:
                raise AnnotationError(f"unknown sensor {sid!r}; this kiosk has "
                                      f"{', '.join(sorted(known))}")
        overlapping = annotations_between(store, start, end)
        targets: list[str | None] = [*sensors] or [None]  # None: the whole site
        for target in targets:
            aid = add(store, start=start, end=end, kind=kinds[0], note=note, sensor_id=target, tz=tz)
            click.echo(f"annotation #{aid}: {kinds[0]}, {target or 'whole site'}, "
                       f"{span_text(start, end, tz)}: {note.strip()}")
    for a in overlapping:
        if not sensors or a["sensor_id"] is None or a["sensor_id"] in sensors:
            click.echo(f"note: it overlaps annotation #{a['id']} ({a['kind']}, "
                       f"{a['sensor_id'] or 'whole site'}, {span_text(a['start'], a['end'], tz)}); "
                       f"`kiosk annotate --delete {a['id']}` removes that one", err=True)


def _list(config_path: str | None, db_path: str | None, since: str | None,
          sensors: tuple[str, ...], fmt: str) -> None:
    store, tz, _cfg = open_store(config_path, db_path)
    with store:
        t0 = parse_when(since, tz, now=time.time()) if since else 0
        rows = annotations_between(store, t0, 2**62)
    if sensors:
        rows = [a for a in rows if a["sensor_id"] is None or a["sensor_id"] in sensors]
    if fmt == "json":
        from kiosk.periods import iso_utc

        click.echo(json.dumps([{**a, "start": iso_utc(a["start"]), "end": iso_utc(a["end"]),
                                "local_start": datetime.fromtimestamp(a["start"], tz).isoformat(),
                                "local_end": datetime.fromtimestamp(a["end"], tz).isoformat(),
                                "created_at": iso_utc(a["created_at"])} for a in rows],
                              indent=1, ensure_ascii=False))
        return
    if not rows:
        click.echo("no annotations" + (f" since {local_text(t0, tz, seconds=False)}" if since else ""))
        return
    kw = max(len(a["kind"]) for a in rows)
    sw = max(len(a["sensor_id"] or "whole site") for a in rows)
    for a in rows:
        click.echo(f"#{a['id']:<4} {a['kind']:<{kw}}  {a['sensor_id'] or 'whole site':<{sw}}  "
                   f"{span_text(a['start'], a['end'], tz)}  {a['note']}")

@click.command("import", context_settings=CONTEXT)
@click.argument("file", required=False, type=click.Path(dir_okay=False))
@config_option
@db_option
@click.option("--upload", is_flag=True,
              help="Also send the imported totals to the statistics server (flagged "
                   "'imported'); default: keep them for local reports only.")
@click.option("--dry-run", is_flag=True, help="Check the file and say what would change; write nothing.")
@click.option("--replace", "replace_imported", is_flag=True,
              help="Overwrite rows of earlier imports that overlap this file.")
@click.option("--any-sensor", is_flag=True,
              help="Accept sensor ids this kiosk does not know (e.g. a door that is gone).")
@click.option("--list", "list_imports", is_flag=True, help="List earlier imports and exit.")
@click.option("--undo", "undo_id", type=int, metavar="ID",
              help="Remove the counts of import ID (see --list) and exit.")
def import_command(file: str | None, config_path: str | None, db_path: str | None, upload: bool,
                   dry_run: bool, replace_imported: bool, any_sensor: bool, list_imports: bool,
                   undo_id: int | None) -> None:
    """Import historical totals from an old counter, so year-on-year comparisons work
    from day one.

    FILE.csv has the columns of `kiosk export`: sensor_id,start,end,in,out with a
    header line and times in ISO 8601 with Z or an offset.  Rows may be 15 minutes,
    hours or days long (multiples of 15 minutes on quarter-hour boundaries); a longer
    row is stored whole in its first quarter hour, so 15-minute exports show it there.

    Every row is checked first; if any is bad, each problem is listed by line number and
    nothing is imported.  Periods this kiosk counted itself are refused.  Importing the
    same file again changes nothing; rows that overlap an earlier import are refused
    unless --replace.  Imported counts appear in reports and exports, marked imported,
    and are not uploaded unless --upload.  Safe while the daemon runs.
    """
    if list_imports or undo_id is not None:
        if file or upload or dry_run or replace_imported:
            raise click.UsageError("--list and --undo take no FILE or other options")
        _list_or_undo(config_path, db_path, undo_id)
        return
    if not file:
        raise click.UsageError("give the FILE.csv to import (or --list / --undo ID)")
    if not Path(file).is_file():
        raise ImportFileError(f"{file}: no such file")
    path, tz, cfg = locate(config_path, db_path)
    period_s = None
    if upload:
        if cfg is None or cfg.upload is None:
            raise ImportFileError(
                "--upload needs a config with an [upload] section (the totals are sent as its "
                "period_minutes periods); without it imported counts stay local")
        period_s = cfg.upload.period_minutes * 60
    from kiosk.store import Store

    if dry_run and not Path(path).exists():
        store = Store.open(":memory:")  # check against an empty database; create nothing
    else:
        if not Path(path).exists():
            click.echo(f"note: {path} did not exist; creating a new database (the service user "
                       f"must be able to write it: run this as that user, e.g. sudo -u kiosk)",
                       err=True)
        store = Store.open(path)  # the writer connection: short transactions beside the daemon
    shown = ProgressLine(sys.stdout)
    with store:
        known = known_sensors(store, [s.id for s in cfg.sensors] if cfg else None)
        try:
            r = import_file(store, file, tz=tz, upload=upload, replace_imported=replace_imported,
                            dry_run=dry_run, known=known, any_sensor=any_sensor,
                            upload_period_s=period_s,
                            progress=_import_progress(shown) if shown.enabled else None)
        finally:
            shown.close()
    if r.already:
        a = r.already
        click.echo(f"{file}: already imported on {local_text(a['imported_at'], tz, seconds=False)} "
                   f"(import #{a['id']}, {a['rows']} row(s)"
                   f"{', uploaded' if a['upload'] else ', kept locally'}); nothing changed")
        if upload and not a["upload"]:
            click.echo("to upload it now, run again with --replace --upload", err=True)
        return
    text = import_summary(Path(file).name, r.plan, r.import_id, upload, tz)
    click.echo(text + ("; dry run, nothing written" if dry_run else ""))


def _import_progress(shown: ProgressLine) -> ProgressCallback:
    """The import's progress on one terminal line: MB read, then checking and writing."""

    def report(p: ImportProgress) -> None:
        if p.phase == "read":
            shown.show(f"reading: {p.done / 1e6:,.1f} of {p.total / 1e6:,.1f} MB", p.done, p.total)
        else:
            shown.show("checking the rows against the database" if p.phase == "check"
                       else "writing", 0, 0)

    return report


def _list_or_undo(config_path: str | None, db_path: str | None, undo_id: int | None) -> None:
    if undo_id is not None:
        store, tz, _cfg = open_store(config_path, db_path, write=True, create=False)
        with store:
            n = undo(store, undo_id, tz=tz)
            uploaded = store.import_uploaded(undo_id)
        click.echo(f"import #{undo_id} undone: removed {n} imported row(s)")
        if uploaded:
            click.echo("note: totals already sent stay on the statistics server; the protocol "
                       "has no way to withdraw them", err=True)
        return
    store, tz, _cfg = open_store(config_path, db_path)
    with store:
        rows = imports(store)
    if not rows:
        click.echo("no imports")
        return
    for r in rows:
        span = (f"{local_text(r['first_start'], tz, seconds=False)} to "
                f"{local_text(r['last_end'], tz, seconds=False)}" if r["first_start"] is not None
                else "-")
        state = (f"undone {local_text(r['undone_at'], tz, seconds=False)}" if r["undone_at"]
                 else f"{r['rows_left']} row(s)" + ("" if r["rows_left"] == r["rows"]
                                                   else f" of {r['rows']} left"))
        click.echo(f"#{r['id']}  {local_text(r['imported_at'], tz, seconds=False)}  "
                   f"{Path(r['file']).name}  {r['sensors']}  {span}  {state}, "
                   f"{'uploaded' if r['upload'] else 'local only'}")

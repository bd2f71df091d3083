"""``kiosk report``: visits per day, week, month or year in local time."""

from __future__ import annotations

import time

import click

from kiosk.cli.options import CONTEXT, config_option, db_option, open_store
from kiosk.exc import ExportError
from kiosk.report.compute import FORMATS, SPANS, VISITS


@click.command("report", context_settings=CONTEXT)
@click.argument("span", type=click.Choice(SPANS), metavar="SPAN")
@click.argument("date_text", metavar="[DATE]", required=False)
@config_option
@db_option
@click.option("--format", "fmt", type=click.Choice(FORMATS), default="table", show_default=True,
              help="html writes one self-contained page with a bar chart.")
@click.option("--output", "-o", metavar="FILE",
              help="Write to FILE ('-' for standard output); html defaults to "
                   "kiosk-report-<span>-<date>.html in the current directory.")
@click.option("--sensor", "sensors", multiple=True, metavar="ID",
              help="Only this sensor (repeatable; default: every sensor, summed for the site).")
@click.option("--visits", type=click.Choice(VISITS), default=None,
              help="'in' counts entries; 'in+out/2' for sensors that cannot tell direction "
                   "(default: [report] visits of the config, else 'in').")
def report_command(span: str, date_text: str | None, config_path: str | None, db_path: str | None,
                   fmt: str, output: str | None, sensors: tuple[str, ...], visits: str | None) -> None:
    """Visits per hour, day or month of one day, week, month or year, in local time.

    SPAN is day, week, month or year.  DATE is any day inside the span (default today):
    2026-11-24; also 2026-11 for a month, 2026 for a year, 2026-W48 for a week, today,
    yesterday.  Every report gives the total, the change against comparable earlier spans
    (only over the time both were counted, and saying which), the average per weekday
    and weekend day, a typical day by hour (week, month, year), and the busiest hour and
    day.  Time that was not counted reads – (never 0); imported history is marked.
    Reads the database only; safe while the daemon runs.
    """
    from kiosk.report import RENDERERS, build_report, parse_report_date
    from kiosk.status import store_now

    store, tz, cfg = open_store(config_path, db_path)
    with store:
        now = store_now(store, real_now=time.time())
        day = parse_report_date(date_text, span, tz, now=now)
        rep = build_report(store, span=span, date=day, tz=tz, now=now,
                           visits=visits or (cfg.report.visits if cfg else "in"),
                           sensors=list(sensors) or None, site=cfg.device.site if cfg else None)
    text = RENDERERS[fmt](rep)
    if output is None and fmt == "html":
        output = f"kiosk-report-{span}-{rep['key']}.html"
    if output is None or output == "-":
        click.echo(text, nl=False)
        return
    try:
        with open(output, "w", encoding="utf-8") as f:
            f.write(text)
    except OSError as e:
        raise ExportError(f"{output}: cannot write the report: {e.strerror or e}") from None
    click.echo(output)

"""The ``kiosk`` command: the click group and the entry point.

Each command family lives in its own module; none of them imports SQLite, requests,
gpiozero or pyserial before a command runs, so ``kiosk --help`` stays fast on a Pi.
The library (everything outside ``kiosk.cli``) never imports this package.
"""

from __future__ import annotations

import os
import sys
from typing import Any

import click

from kiosk import __version__, systemd
from kiosk.cli.options import CONTEXT
from kiosk.exc import ConfigError, KioskError


class KioskGroup(click.Group):
    """Turns our errors into one clear line and an exit status (2 for config errors)."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except KioskError as e:
            if ctx.obj and ctx.obj.get("debug"):
                raise
            # Under systemd a "<3>" prefix gives the line priority err in the journal, so
            # that `journalctl -p err` shows why the service failed (stderr is info otherwise).
            prio = "<3>" if os.environ.get("JOURNAL_STREAM") else ""
            for line in str(e).splitlines() or [type(e).__name__]:
                click.echo(f"{prio}kiosk: error: {line}", err=True)
            if isinstance(e, ConfigError) and len(e.problems) > 1:
                click.echo(f"{prio}kiosk: {len(e.problems)} problems in the configuration",
                           err=True)
            # systemctl status keeps showing it after the service has failed.
            systemd.status(f"failed: {str(e).splitlines()[0] if str(e) else type(e).__name__}")
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


def _register() -> None:
    from kiosk.cli import counting, data, report, staff, uploads

    for command in (counting.run, counting.demo, counting.check_config, data.status, data.export,
                    uploads.sync, uploads.receiver, report.report_command, staff.log_command,
                    staff.import_command, staff.annotate_command):
        cli.add_command(command)


_register()


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

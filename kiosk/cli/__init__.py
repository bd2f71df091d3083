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
from kiosk.exc import ConfigError, KioskError, UsageError

USAGE_EXIT = 2  #: exit status of a usage error (a bad option or argument) and a config error


def _error_lines(lines: list[str]) -> None:
    """``kiosk: error: …`` on standard error, one line each.

    Under systemd a "<3>" prefix gives the line priority err in the journal, so that
    `journalctl -p err` shows why the service failed (stderr is info otherwise).
    """
    prio = "<3>" if os.environ.get("JOURNAL_STREAM") else ""
    for line in lines:
        click.echo(f"{prio}kiosk: {line}", err=True)


def usage_error(e: click.ClickException) -> int:
    """Click's own errors (unknown option, bad value, missing argument) in our one style:
    ``kiosk: error: …`` and where to read more; returns the exit status (2 for usage)."""
    hint = ""
    ctx = getattr(e, "ctx", None)
    if isinstance(e, click.UsageError) and ctx is not None:
        hint = f" (see `{ctx.command_path} --help`)"
    _error_lines([f"error: {e.format_message()}{hint}"])
    return e.exit_code


class KioskGroup(click.Group):
    """Turns our errors into one clear line and an exit status: 2 for usage and config
    errors (click's own included), 1 for the others."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except KioskError as e:
            if ctx.obj and ctx.obj.get("debug"):
                raise
            _error_lines([f"error: {line}" for line in str(e).splitlines() or [type(e).__name__]])
            if isinstance(e, ConfigError) and len(e.problems) > 1:
                _error_lines([f"{len(e.problems)} problems in the configuration"])
            # systemctl status keeps showing it after the service has failed.
            systemd.status(f"failed: {str(e).splitlines()[0] if str(e) else type(e).__name__}")
            ctx.exit(USAGE_EXIT if isinstance(e, ConfigError | UsageError) else 1)
        except click.exceptions.Exit:
            raise
        except click.ClickException as e:
            ctx.exit(usage_error(e))
        except OSError as e:  # a port in use, a file that cannot be written: one line
            if (ctx.obj and ctx.obj.get("debug")) or isinstance(e, BrokenPipeError):
                raise
            _error_lines([f"error: {e.strerror or e}" + (f": {e.filename}" if e.filename else "")])
            ctx.exit(1)

    def main(self, *args: Any, **kwargs: Any) -> Any:
        """Click's errors before a command runs (``kiosk --bogus``) in the same style."""
        if not kwargs.get("standalone_mode", True):
            return super().main(*args, **kwargs)
        try:
            rv = super().main(*args, **{**kwargs, "standalone_mode": False})
        except click.exceptions.Exit as e:
            sys.exit(e.exit_code)
        except click.exceptions.Abort:
            click.echo("Aborted.", err=True)
            sys.exit(1)
        except click.ClickException as e:
            sys.exit(usage_error(e))
        sys.exit(rv if isinstance(rv, int) else 0)  # ctx.exit(n) came back as n


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
    from kiosk.cli import counting, data, report, staff, uploads, web

    for command in (counting.run, counting.demo, counting.check_config, data.status, data.export,
                    uploads.sync, uploads.receiver, report.report_command, staff.log_command,
                    staff.import_command, staff.annotate_command, web.web):
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
        return usage_error(e)
    except BrokenPipeError:
        sys.stderr.close()
        return 1

"""``kiosk run``, ``kiosk demo`` and ``kiosk check-config``."""

from __future__ import annotations

import click

from kiosk.cli.options import config_option
from kiosk.config import find_config_path, load


@click.command()
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
    from kiosk.app import run_daemon, with_db

    path = find_config_path(config_path)
    cfg = load(path)
    if db_path:
        cfg = with_db(cfg, db_path)
    ctx.exit(run_daemon(cfg, speed=speed, config_path=path, debug=bool(ctx.obj.get("debug"))))


@click.command()
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

    Two simulated entrances and a simulated feedback terminal (satisfaction buttons)
    count into a local database on an accelerated clock; the daemon uploads hourly
    totals to the reference receiver on 127.0.0.1, and each period is printed as the
    receiver accepts it.  Stop with Ctrl-C or --hours.
    """
    from kiosk.demo import run_demo

    ctx.exit(run_demo(data_dir=data_dir, speed=speed, hours=hours, start_at=start_at,
                      debug=bool(ctx.obj.get("debug"))))


@click.command("check-config")
@click.argument("path", required=False)
def check_config(path: str | None) -> None:
    """Validate a config file without starting anything (exit status 2 if invalid)."""
    path = find_config_path(path)
    cfg = load(path)
    warning = None
    if cfg.upload is not None:  # an unsafe token file is refused here, not only at upload time
        from kiosk.exc import ConfigError, TokenFileError
        from kiosk.token_file import read_token

        try:
            read_token(cfg.upload.token_file)
        except TokenFileError as e:
            if not (e.missing or e.unreadable):
                raise ConfigError(f"{path}: [upload] token_file: {e}", path=path) from None
            # valid, but uploads wait: say so, still exit 0 (install.sh checks before the
            # token is there)
            warning = (f"{path}: warning: {e}; until then uploads are paused and counts are "
                       f"kept on this device")
    kinds = ", ".join(f"{s.id} ({s.type})" for s in cfg.sensors)
    where = f"uploads to {cfg.upload.url}" if cfg.upload else "no [upload]: counts are kept locally only"
    click.echo(f"{path}: OK: device {cfg.device.id} at {cfg.device.site}, sensors: {kinds}; {where}")
    if warning:
        click.echo(warning, err=True)

"""``kiosk sync`` and ``kiosk receiver``: uploads now, and the reference receiver."""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Any, TextIO

import click

from kiosk.cli.options import config_option, load_config


class ProgressLine:
    """``kiosk sync`` progress: one line on a terminal, redrawn at most 5 times a second,
    erased at the end.  Disabled (``enabled`` False) when the stream is not a terminal."""

    def __init__(self, stream: TextIO) -> None:
        self.stream = stream
        self.enabled = stream.isatty()
        self._drawn = 0.0
        self._width = 0

    def __call__(self, p: Any) -> None:
        if p.phase == "scan":
            self.show(f"preparing: {p.done:,} of {p.total:,} periods", p.done, p.total)
        else:
            self.show(f"sending: {p.done:,} of {p.total:,} totals sent", p.done, p.total)

    def show(self, text: str, done: int, total: int) -> None:
        """Draw ``text`` (and ``done`` as a percentage of ``total`` when it is known),
        unless drawn less than 0.2 s ago and not finished."""
        if not self.enabled:
            return
        now = time.monotonic()
        if now - self._drawn < 0.2 and done < total:
            return
        self._drawn = now
        text += f" ({100 * done // total}%)" if total else ""
        self.stream.write("\r" + text.ljust(self._width))
        self.stream.flush()
        self._width = len(text)

    def close(self) -> None:
        if self._width:
            self.stream.write("\r" + " " * self._width + "\r")
            self.stream.flush()
            self._width = 0


@click.command()
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
    from kiosk.token_file import read_token
    from kiosk.upload import UploadLock, uploader_for
    from kiosk.upload_messages import sync_summary

    cfg = load_config(config_path)
    assert cfg is not None
    if cfg.upload is None:
        raise UploadError(f"{cfg.source} has no [upload] section: this kiosk keeps its counts "
                          f"locally and uploads nothing")
    shown = ProgressLine(sys.stdout)
    with uploader_for(cfg, clock=SystemClock(), retries=False) as up:
        up.progress = shown if shown.enabled else None
        if list_quarantined:
            rows = up.quarantined()
            if not rows:
                click.echo("no quarantined totals")
            for r in rows:
                click.echo(f"{r['sensor_id']} {r['start']}..{r['end']} in={r['in']} "
                           f"out={r['out']} revision={r['revision']}: {r['error']}")
            return
        read_token(cfg.upload.token_file)  # an unsafe token file: one line, exit 1
        lock = UploadLock(cfg.storage.path)
        if not lock.acquire(timeout=wait):
            raise UploadError(f"the daemon's upload did not finish within {wait:g} s; "
                              f"try again or raise --wait")
        try:
            if retry_quarantined:
                click.echo(f"{up.retry_quarantined()} quarantined total(s) queued again")
            try:
                outcome = up.cycle(health_due=True)
            finally:
                shown.close()
            lines, done = sync_summary(up, outcome)
        finally:
            lock.release()
    for line in lines:
        click.echo(line, err=not done)
    if not done:
        raise SystemExit(1)


@click.command()
@click.option("--port", type=int, default=8080, show_default=True, help="TCP port to listen on.")
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to bind.")
@click.option("--db", "db_path", default="receiver.db", show_default=True, metavar="PATH",
              help="Where the receiver stores what it accepts.")
@click.option("--token-file", type=click.Path(exists=True, dir_okay=False), default=None,
              help="Require this bearer token (default: accept any).")
@click.option("--request-deadline", type=click.FloatRange(min=1), default=None,
              metavar="SECONDS", help="Hang up on a client that has not sent its whole "
              "request this many seconds after connecting (default: 30).")
@click.option("--show", is_flag=True, help="List what the receiver holds, then exit.")
def receiver(port: int, host: str, db_path: str, token_file: str | None,
             request_deadline: float, show: bool) -> None:
    """The reference receiver: a small statistics server for tests, demos and the city's
    server team (not a production server).  See docs/protocol.md."""
    from kiosk import receiver as rx
    from kiosk.exc import ReceiverError

    if show:
        from tabulate import tabulate

        rows = rx.show(db_path)
        click.echo(tabulate([[r["device_id"], r["sensor_id"], r["start"], r["local_start"],
                              r["in"], r["out"], r["coverage"], r["revision"]] for r in rows],
                            headers=["device", "sensor", "start (UTC)", "local start", "in",
                                     "out", "coverage", "revision"]))
        s = rx.summary(db_path)
        answered = rx.show_feedback(db_path)
        if answered:
            click.echo("")
            click.echo(tabulate(
                [[f["device_id"], f["sensor_id"], f["start"], f["answers"], f["repeated"],
                  ", ".join(f"{lv['level']} {lv['answers']}" for lv in f["levels"]),
                  f["revision"]] for f in answered],
                headers=["device", "terminal", "start (UTC)", "answers", "repeated",
                         "per level (best first)", "revision"]))
        click.echo(f"{s['periods']} periods, {s['in']} in, {s['out']} out; "
                   + (f"{len(answered)} feedback periods, "
                      f"{sum(f['answers'] for f in answered)} answers; " if answered else "")
                   + f"{s['requests']} requests {s['requests_by_status']}")
        return
    token = None
    if token_file:
        try:
            token = Path(token_file).read_text(encoding="utf-8").strip()
        except (OSError, UnicodeDecodeError) as e:
            raise ReceiverError(f"cannot read the token file {token_file}: "
                                f"{getattr(e, 'strerror', None) or 'not UTF-8 text'}") from None
        if not token:
            raise ReceiverError(f"the token file {token_file} is empty")
    if request_deadline is None:
        rx.serve_forever(db_path, host, port, token)
    else:
        rx.serve_forever(db_path, host, port, token, request_deadline_s=request_deadline)



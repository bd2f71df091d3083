"""``kiosk web``: the dashboard for the facilities staff (Flask loads only here)."""

from __future__ import annotations

import click

from kiosk.cli.options import CONTEXT, config_option, db_option, locate
from kiosk.exc import WebError


@click.command("web", context_settings=CONTEXT)
@config_option
@db_option
@click.option("--listen", metavar="HOST:PORT", default=None,
              help="Address to serve on (default: [web] listen, else 127.0.0.1:8080). "
                   "Anything but loopback needs [web] password_file.")
@click.option("--set-password", "set_password", is_flag=True,
              help="Ask for a new dashboard password and write its scrypt hash to "
                   "[web] password_file (or --password-file); then exit.")
@click.option("--password-file", metavar="PATH", default=None,
              help="The password file (default: [web] password_file).")
def web(config_path: str | None, db_path: str | None, listen: str | None, set_password: bool,
        password_file: str | None) -> None:
    """Serve the dashboard: today so far, reports, the journal and annotations, in a
    browser.

    Reading needs a login unless the dashboard is reachable from this machine only and has
    no password, or [web] public_read = true; adding and deleting annotations always needs
    one.  The database is only read, except to add and delete annotations.  Stop with
    Ctrl-C (or systemctl stop kiosk-web).
    """
    from zoneinfo import ZoneInfo

    from kiosk.cli.options import load_config
    from kiosk.config import DEFAULT_TIMEZONE, WebConfig, is_loopback, parse_listen, web_problems

    if set_password:
        cfg = load_config(config_path, db_path) if (config_path or db_path is None) else None
        path = password_file or (cfg.web.password_file if cfg else None)
        if not path:
            raise WebError("no password file: set [web] password_file in the config "
                           "(e.g. /etc/kiosk/web-password) or give --password-file PATH")
        from kiosk.web.security import MIN_PASSWORD, write_password

        pw = click.prompt(f"New dashboard password (at least {MIN_PASSWORD} characters)",
                          hide_input=True, confirmation_prompt=True)
        write_password(path, pw)
        click.echo(f"wrote the password hash to {path}; a running dashboard uses it at the next login")
        return
    path, tz, cfg = locate(config_path, db_path)
    wc = cfg.web if cfg else WebConfig()
    listen = listen or wc.listen
    pw_file = password_file or wc.password_file
    problems = web_problems(listen, pw_file, wc.cert_file, wc.key_file)
    if problems:
        raise WebError("; ".join(p.text for p in problems))
    host, _port = parse_listen(listen)
    from kiosk.web import Settings, create_app
    from kiosk.web.security import password_problem
    from kiosk.web.server import serve

    if pw_file and (problem := password_problem(pw_file)):
        click.echo(f"kiosk web: warning: nobody can log in: {problem}", err=True)

    app = create_app(Settings(db_path=path, tz=ZoneInfo(tz.key if tz else DEFAULT_TIMEZONE),
                              config=cfg, password_file=pw_file, public_read=wc.public_read,
                              loopback=is_loopback(host), tls=bool(wc.cert_file)))
    serve(app, listen=listen, cert_file=wc.cert_file, key_file=wc.key_file)

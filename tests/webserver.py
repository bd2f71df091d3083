"""``kiosk web`` as a real subprocess on 127.0.0.1 (an ephemeral port), for the web tests."""

from __future__ import annotations

import http.cookiejar
import os
import re
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

from tests.conftest import DEVICE_SECTION, ROOT, storage_section

PASSWORD = "correct horse battery"


def web_config(tmp_path: Path, db: Path, *, web: str = "", sensors: str = "",
               password: bool = True, flush: float | None = None) -> Path:
    """A config with the 4 sensors of tests.webdata (simulated: never started here) and a
    ``[web]`` section (a password file with :data:`PASSWORD` unless ``password=False``)."""
    from tests.webdata import SENSORS

    text = DEVICE_SECTION + storage_section(db, flush)
    text += sensors or "".join(f'\n[[sensors]]\nid = "{s}"\ntype = "simulated"\n' for s in SENSORS)
    if password:
        from kiosk.web.security import write_password

        pw = tmp_path / "web-password"
        write_password(str(pw), PASSWORD)
        web = f'password_file = "{pw}"\n' + web
    text += "\n[web]\n" + web
    path = tmp_path / "kiosk.toml"
    path.write_text(text)
    return path


class WebServer:
    """The dashboard process; ``url`` is its base address once it serves."""

    def __init__(self, config: Path, tmp_path: Path, *args: str, wrap: tuple[str, ...] = ()) -> None:
        self.log_path = tmp_path / f"web-{time.monotonic_ns()}.log"
        self.log = open(self.log_path, "ab")  # noqa: SIM115
        env = dict(os.environ, PYTHONUNBUFFERED="1")
        env.pop("KIOSK_CONFIG", None)
        self.proc = subprocess.Popen(
            [*wrap, sys.executable, "-m", "kiosk", "web", "--config", str(config),
             "--listen", "127.0.0.1:0", *args],
            cwd=ROOT, env=env, stdout=self.log, stderr=subprocess.STDOUT)
        self.url = self._wait_url()

    def _wait_url(self, timeout: float = 20.0) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            m = re.search(r"serving (https?://127\.0\.0\.1:\d+)/", self.output())
            if m:
                return m.group(1)
            if self.proc.poll() is not None:
                break
            time.sleep(0.05)
        raise AssertionError(f"kiosk web did not start; log:\n{self.output()}")

    def output(self) -> str:
        self.log.flush()
        return self.log_path.read_text(errors="replace")

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        self.log.close()


class Client:
    """A cookie-keeping HTTP client that never follows redirects and never raises on 4xx."""

    def __init__(self, base: str) -> None:
        self.base = base
        self.jar = http.cookiejar.CookieJar()

        class NoRedirect(urllib.request.HTTPRedirectHandler):
            def redirect_request(self, *a: Any, **k: Any) -> None:
                return None

        self.opener = urllib.request.build_opener(
            urllib.request.HTTPCookieProcessor(self.jar), NoRedirect)

    def request(self, path: str, form: dict[str, str] | None = None,
                method: str | None = None) -> tuple[int, dict[str, str], str]:
        body = urllib.parse.urlencode(form).encode() if form is not None else None
        req = urllib.request.Request(self.base + path, data=body, method=method)
        try:
            with self.opener.open(req, timeout=30) as r:
                return r.status, dict(r.headers), r.read().decode("utf-8", "replace")
        except urllib.error.HTTPError as e:
            return e.code, dict(e.headers), e.read().decode("utf-8", "replace")

    def get(self, path: str) -> tuple[int, dict[str, str], str]:
        return self.request(path)

    def post(self, path: str, form: dict[str, str]) -> tuple[int, dict[str, str], str]:
        return self.request(path, form, "POST")

    def csrf(self, path: str = "/login") -> str:
        status, _h, text = self.get(path)
        m = re.search(r'name="csrf_token" value="([^"]+)"', text)
        assert m, f"no CSRF token on {path} ({status})"
        return m.group(1)

    def login(self, password: str = PASSWORD) -> int:
        token = self.csrf("/login")
        status, _h, _t = self.post("/login", {"csrf_token": token, "password": password})
        return status

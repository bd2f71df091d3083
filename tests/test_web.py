"""``kiosk web`` over real HTTP: the server is a subprocess on 127.0.0.1, the database a
real file.  The browser tests are in test_web_browser.py."""

from __future__ import annotations

import re
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from kiosk.config import WEB_KEYS, WebConfig, loads, parse_listen
from kiosk.exc import ConfigError
from tests.conftest import DEVICE_SECTION, ROOT, simulated_sensor, storage_section
from tests.webdata import year_db
from tests.webserver import PASSWORD, Client, WebServer, web_config

BASE = DEVICE_SECTION + storage_section("/tmp/x.db") + simulated_sensor("door")


@pytest.fixture(scope="module")
def year(tmp_path_factory) -> Path:
    """One year of counts for 4 sensors, ending now (read-only use)."""
    return year_db(tmp_path_factory.mktemp("year") / "counts.db", time.time())


@pytest.fixture
def web(tmp_path):
    started: list[WebServer] = []

    def start(config: Path, *args: str) -> WebServer:
        s = WebServer(config, tmp_path, *args)
        started.append(s)
        return s

    yield start
    for s in started:
        s.close()


def annotation_count(db: Path) -> int:
    conn = sqlite3.connect(db)
    try:
        return conn.execute("SELECT count(*) FROM annotations").fetchone()[0]
    finally:
        conn.close()


# -- the [web] section -------------------------------------------------------------------------

def test_web_defaults_are_written_once():
    assert loads(BASE).web == WebConfig()
    assert WebConfig().listen == WEB_KEYS["listen"].default == "127.0.0.1:8080"
    assert WebConfig().public_read is False and WebConfig().password_file is None


@pytest.mark.parametrize(("extra", "message"), [
    ('listen = "0.0.0.0:8080"', "password_file: listen '0.0.0.0:8080' is reachable from the network"),
    ('listen = "[::]:8080"', "reachable from the network"),
    ('listen = "localhost"', "[web] listen: expected HOST:PORT"),
    ('listen = "127.0.0.1:70000"', "port 70000 is not 0-65535"),
    ('cert_file = "/etc/kiosk/cert.pem"', "cert_file and key_file go together"),
    ("public_read = 1", "[web] public_read: expected true or false"),
    ('pasword_file = "/x"', "did you mean 'password_file'?"),
])
def test_web_config_refuses(extra, message):
    with pytest.raises(ConfigError) as e:
        loads(BASE + "\n[web]\n" + extra + "\n")
    assert message in str(e.value)


def test_web_config_accepts_network_listen_with_password():
    cfg = loads(BASE + '\n[web]\nlisten = "0.0.0.0:8443"\npassword_file = "/etc/kiosk/web-password"\n'
                'public_read = true\ncert_file = "/c.pem"\nkey_file = "/k.pem"\n')
    assert cfg.web.listen == "0.0.0.0:8443" and cfg.web.public_read and cfg.web.key_file == "/k.pem"
    assert parse_listen("[::1]:8080") == ("::1", 8080)


def test_network_listen_without_password_is_refused_before_binding(tmp_path, year):
    cfg = web_config(tmp_path, year, password=False)
    r = subprocess.run([sys.executable, "-m", "kiosk", "web", "--config", str(cfg),
                        "--listen", "0.0.0.0:0"], capture_output=True, text=True, cwd=ROOT, timeout=60)
    assert r.returncode == 1
    assert "reachable from the network: set password_file" in r.stderr
    assert "Traceback" not in r.stderr


# -- the password ---------------------------------------------------------------------------------

def test_set_password_writes_a_scrypt_hash(tmp_path):
    pw = tmp_path / "web-password"
    cfg = tmp_path / "kiosk.toml"
    cfg.write_text(BASE + f'\n[web]\npassword_file = "{pw}"\n')
    r = subprocess.run([sys.executable, "-m", "kiosk", "web", "--config", str(cfg), "--set-password"],
                       input="short\nshort\n", capture_output=True, text=True, cwd=ROOT, timeout=60)
    assert r.returncode == 1 and "too short" in r.stderr and not pw.exists()
    r = subprocess.run([sys.executable, "-m", "kiosk", "web", "--config", str(cfg), "--set-password"],
                       input=f"{PASSWORD}\n{PASSWORD}\n", capture_output=True, text=True, cwd=ROOT,
                       timeout=60)
    assert r.returncode == 0, r.stderr
    text = pw.read_text()
    assert text.startswith("scrypt:") and PASSWORD not in text
    assert pw.stat().st_mode & 0o777 == 0o640
    from kiosk.web.security import check_password

    assert check_password(str(pw), PASSWORD) and not check_password(str(pw), PASSWORD + "x")


# -- reading, headers, sessions -------------------------------------------------------------------

def test_reading_needs_a_login_unless_public_read(tmp_path, web, year):
    s = web(web_config(tmp_path, year))
    c = Client(s.url)
    status, headers, _ = c.get("/report/week")
    assert status == 302 and headers["Location"].startswith("/login?next=/report/week")
    assert c.login() == 303
    assert c.get("/report/week")[0] == 200
    s.close()
    s = web(web_config(tmp_path, year, web="public_read = true\n"))
    assert Client(s.url).get("/")[0] == 200


def test_security_headers_and_session_cookie(tmp_path, web, year):
    s = web(web_config(tmp_path, year, web="public_read = true\n"))
    c = Client(s.url)
    for path in ("/", "/report/day", "/journal", "/annotations", "/login", "/nope",
                 "/static/dashboard.css"):
        _status, h, _ = c.get(path)
        csp = h["Content-Security-Policy"]
        assert "frame-ancestors 'none'" in csp and "script-src 'self'" in csp, path
        assert "unsafe-inline" not in csp and "unsafe-eval" not in csp, path
        assert h["X-Content-Type-Options"] == "nosniff", path
    _s, h, body = Client(s.url).get("/login")
    cookie = h["Set-Cookie"]
    assert "kiosk_session=" in cookie and "HttpOnly" in cookie and "SameSite=Strict" in cookie
    assert "<script>" not in body and not re.search(r"<[^>]*\son\w+\s*=", body)  # nothing inline


def test_every_post_without_login_is_refused(tmp_path, web, year):
    s = web(web_config(tmp_path, year, web="public_read = true\n"))
    c = Client(s.url)
    token = c.csrf("/login")  # a valid token of an anonymous session is not a login
    form = {"csrf_token": token, "kind": "closed", "first": "2026-01-01", "note": "x"}
    for path in ("/annotations", "/annotations/1/delete", "/logout"):
        status, _h, body = c.post(path, form)
        assert status == 403, path
        assert "log in first" in body and "Traceback" not in body
    assert annotation_count(year) == 0


def test_every_post_with_a_wrong_csrf_token_is_refused(tmp_path, web):
    db = year_db(tmp_path / "counts.db", time.time(), days=8)
    s = web(web_config(tmp_path, db))
    c = Client(s.url)
    status, _h, body = c.post("/login", {"password": PASSWORD})  # no token at all
    assert status == 400 and "CSRF" in body
    assert c.login() == 303
    good = c.csrf("/annotations")
    form = {"kind": "closed", "first": "2026-01-01", "note": "holiday"}
    for token in ("", "x" * 43, good[:-1] + ("A" if good[-1] != "A" else "B")):
        for path in ("/annotations", "/annotations/1/delete", "/logout"):
            status, _h, body = c.post(path, {**form, "csrf_token": token})
            assert status == 400, (path, token)
            assert "CSRF" in body
    assert annotation_count(db) == 0
    status, _h, _b = c.post("/annotations", {**form, "csrf_token": good})
    assert status == 303 and annotation_count(db) == 1  # the same form with the token works


def test_login_is_rate_limited(tmp_path, web, year):
    s = web(web_config(tmp_path, year))
    c = Client(s.url)
    for _ in range(5):
        assert c.post("/login", {"csrf_token": c.csrf(), "password": "wrong password"})[0] == 401
    status, h, body = c.post("/login", {"csrf_token": c.csrf(), "password": PASSWORD})
    assert status == 429 and int(h["Retry-After"]) > 0
    assert "too many failed logins" in body
    assert c.get("/")[0] == 302  # still not logged in


@pytest.mark.parametrize("path", [
    "/report/day?date=2026-02-30", "/report/day?date=yesterdayish", "/report/day?date=0001-01-01",
    "/report/day?date=9999-12-31", "/report/week?date=1969-12-31", "/report/year?date=2100",
    "/report/month?date=2026-13", "/report/fortnight", "/report/day.pdf",
    "/report/day?sensor=no-such-door", "/report/week.csv?sensor=no-such-door",
    "/journal?sensor=no-such-door", "/journal?level=loud", "/journal?kind=party",
    "/journal?since=the+dawn+of+time", "/journal?since=1d&until=2d", "/journal?page=0",
    "/journal?page=x", "/journal?page=100000", "/annotations/1/delete", "/nope",
    "/report/day?date=" + "9" * 5000, "/journal?since=" + "x" * 3000,
    "/?" + "a=1&" * 50_000,
])
def test_bad_input_gets_a_clear_4xx_page(tmp_path, web, year, path):
    s = web(web_config(tmp_path, year, web="public_read = true\n"))
    status, _h, body = Client(s.url).get(path)
    assert 400 <= status < 500, (status, body[:300])
    assert "Traceback" not in body and "Traceback" not in s.output()
    assert len(body) < 20_000


def test_missing_database_is_a_clear_503_and_is_not_created(tmp_path, web):
    db = tmp_path / "none.db"
    s = web(web_config(tmp_path, db, web="public_read = true\n"))
    status, _h, body = Client(s.url).get("/")
    assert status == 503 and "no database yet" in body
    assert not db.exists()


def test_reads_see_later_writes(tmp_path, web):
    """A reader is opened per request: a database changed after the server started (the
    daemon checkpointed and stopped, so the first reader was immutable) is seen."""
    db = year_db(tmp_path / "counts.db", time.time(), days=2)
    s = web(web_config(tmp_path, db, web="public_read = true\n"))
    c = Client(s.url)
    before = c.get("/journal?since=1h")[2]
    assert "fresh entry" not in before
    from kiosk.store import JournalEntry, Store

    with Store.open(db) as st:
        st.add_journal(JournalEntry(time.time(), "WARNING", "state", "fresh entry", None))
    assert "fresh entry" in c.get("/journal?since=1h")[2]


def test_journal_pages_and_filters(tmp_path, web, year):
    s = web(web_config(tmp_path, year, web="public_read = true\n"))
    c = Client(s.url)
    status, _h, body = c.get("/journal?since=30d")
    assert status == 200 and "200 entries" in body and "page 1 of 4" in body
    assert body.count('<tr class="lvl-') == 50
    body4 = c.get("/journal?since=30d&page=4")[2]
    assert body4.count('<tr class="lvl-') == 50 and "entry 199" in body4 and "entry 199" not in body
    body = c.get("/journal?since=30d&level=error&sensor=door-west")[2]
    rows = re.findall(r'<tr class="lvl-(\w+)">.*?<span class="sensor">([^<]*)</span>', body, re.S)
    assert rows and all(lvl == "error" and sid == "door-west" for lvl, sid in rows)


def test_flask_loads_only_for_kiosk_web(tmp_path):
    from tests.test_layers import _commands, _loaded_after

    web_libs = {"flask", "werkzeug", "jinja2", "waitress"}
    for argv in (["--help"], *([c, "--help"] for c in _commands())):
        loaded = _loaded_after(argv, tmp_path)
        assert not loaded & web_libs, (argv, sorted(loaded & web_libs))


def test_tls_with_cert_file_and_key_file(tmp_path, web, year):
    import shutil
    import ssl
    import urllib.error
    import urllib.request

    if not shutil.which("openssl"):
        pytest.skip("openssl is not installed (needed to make a test certificate)")
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
                    "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1",
                    "-keyout", str(key), "-out", str(cert)], check=True, capture_output=True,
                   timeout=60)
    s = web(web_config(tmp_path, year, web=f'cert_file = "{cert}"\nkey_file = "{key}"\n'))
    assert s.url.startswith("https://127.0.0.1:")
    ctx = ssl.create_default_context(cafile=str(cert))
    with urllib.request.urlopen(s.url + "/login", context=ctx, timeout=30) as r:
        assert r.status == 200
        assert "Secure" in r.headers["Set-Cookie"] and "max-age" in r.headers["Strict-Transport-Security"]
        assert "Log in" in r.read().decode()
    with pytest.raises(OSError):  # plain HTTP is not served on the TLS port
        urllib.request.urlopen(s.url.replace("https:", "http:") + "/login", timeout=10)
    with pytest.raises(urllib.error.URLError):  # and an untrusted client refuses it
        urllib.request.urlopen(s.url + "/login", context=ssl.create_default_context(), timeout=10)
    assert "Traceback" not in s.output()


def test_tls_with_a_missing_key_is_a_clear_error(tmp_path, year):
    cfg = web_config(tmp_path, year,
                     web='cert_file = "/nonexistent/c.pem"\nkey_file = "/nonexistent/k.pem"\n')
    r = subprocess.run([sys.executable, "-m", "kiosk", "web", "--config", str(cfg),
                        "--listen", "127.0.0.1:0"], capture_output=True, text=True, cwd=ROOT, timeout=60)
    assert r.returncode == 1 and "cannot load the TLS certificate /nonexistent/c.pem" in r.stderr
    assert "Traceback" not in r.stderr

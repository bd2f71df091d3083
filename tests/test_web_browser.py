"""The dashboard in a real browser: Playwright (from PyPI) driving Debian's chromium
against ``kiosk web`` running as a subprocess on 127.0.0.1.

Skipped, with the reason, where the playwright package or /usr/bin/chromium is missing
(.ci/run installs chromium; the test extras install playwright).  Screenshots go to
$KIOSK_SCREENSHOTS when it is set (for a person to look at), else to the test's tmp dir.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from datetime import datetime
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from tests.conftest import ROOT, SERIAL_SENSOR
from tests.webdata import SENSORS, year_db
from tests.webserver import PASSWORD, WebServer, web_config

CHROMIUM = "/usr/bin/chromium"
AXE = Path(__file__).parent / "vendor" / "axe-core" / "axe.min.js"
PHONE, DESKTOP = (390, 844), (1280, 900)

sync_api = pytest.importorskip("playwright.sync_api", reason="the playwright package is not installed "
                                                              "(pip install -e '.[test]')")
if not os.access(CHROMIUM, os.X_OK):
    pytest.skip(f"{CHROMIUM} is missing (apt-get install chromium)", allow_module_level=True)


@pytest.fixture(scope="module")
def browser():
    with sync_api.sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        yield b
        b.close()


class Local:
    """Every request of a page: anything not for 127.0.0.1 is recorded and aborted."""

    def __init__(self) -> None:
        self.urls: list[str] = []
        self.outside: list[str] = []

    def attach(self, context) -> None:
        context.route("**/*", self._route)

    def _route(self, route) -> None:
        url = route.request.url
        self.urls.append(url)
        if url.startswith("data:") or urlsplit(url).hostname == "127.0.0.1":
            route.continue_()
        else:
            self.outside.append(url)
            route.abort()


@pytest.fixture
def page_for(browser):
    contexts = []

    def make(size=DESKTOP, **kw):
        ctx = browser.new_context(viewport={"width": size[0], "height": size[1]}, **kw)
        local = Local()
        local.attach(ctx)
        contexts.append(ctx)
        pg = ctx.new_page()
        pg.local = local
        errors: list[str] = []
        pg.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
        pg.console_errors = errors
        return pg

    yield make
    for c in contexts:
        c.close()


@pytest.fixture
def server(tmp_path):
    started: list[WebServer] = []

    def start(config: Path) -> WebServer:
        s = WebServer(config, tmp_path)
        started.append(s)
        return s

    yield start
    for s in started:
        s.close()


@pytest.fixture(scope="module")
def year(tmp_path_factory) -> Path:
    return year_db(tmp_path_factory.mktemp("year") / "counts.db", time.time())


def figure(text: str) -> int | None:
    text = text.strip()
    return None if text == "–" else int(text.replace(",", ""))


def shots_dir(tmp_path: Path) -> Path:
    d = Path(os.environ.get("KIOSK_SCREENSHOTS") or tmp_path / "screenshots")
    d.mkdir(parents=True, exist_ok=True)
    return d


def login(pg, base: str) -> None:
    pg.goto(base + "/login")
    pg.fill("#password", PASSWORD)
    pg.click("form.login button[type=submit]")
    pg.wait_for_url(base + "/")


def test_now_page_shows_the_figures_of_kiosk_report(tmp_path, server, page_for, year):
    cfg = web_config(tmp_path, year, web="public_read = true\n")
    s = server(cfg)
    pg = page_for()
    pg.goto(s.url + "/")
    r = subprocess.run([sys.executable, "-m", "kiosk", "report", "day", "today", "--format", "json",
                        "--config", str(cfg)], capture_output=True, text=True, cwd=ROOT, timeout=60)
    assert r.returncode == 0, r.stderr
    rep = json.loads(r.stdout)
    assert rep["totals"]["visits"] > 0  # the comparison below can fail
    assert figure(pg.text_content("[data-figure=site-today]")) == rep["totals"]["visits"]
    assert figure(pg.text_content("[data-figure=site-then]")) == rep["comparison"]["visits"]
    for sid in SENSORS:
        row = f"tr[data-sensor='{sid}']"
        assert figure(pg.text_content(f"{row} [data-figure=sensor-today]")) == rep["totals"]["by_sensor"][sid]
        assert figure(pg.text_content(f"{row} [data-figure=sensor-then]")) == \
            rep["comparison"]["by_sensor"][sid]
    assert rep["comparison"]["description"] in pg.text_content("#live")
    assert pg.local.outside == [] and pg.console_errors == []


def test_a_pulse_appears_on_the_open_page_without_a_reload(tmp_path, server, page_for, daemon,
                                                           pty_feeder):
    db = tmp_path / "counts.db"
    cfg = web_config(tmp_path, db, web="public_read = true\n", flush=0.2,
                     sensors=SERIAL_SENSOR.format(port=pty_feeder.link))
    d = daemon(cfg)
    d.wait_ready()
    s = server(cfg)
    pg = page_for()
    pg.goto(s.url + "/")
    cell = "tr[data-sensor='door'] [data-figure=sensor-today]"
    before = figure(pg.text_content(cell)) or 0
    pg.evaluate("window.__notReloaded = true")
    pty_feeder.write(b"IN\nIN\nIN\n")
    pg.wait_for_function(
        f"() => document.querySelector(\"{cell}\").textContent.trim() === '{before + 3}'",
        timeout=15_000)
    assert pg.evaluate("window.__notReloaded") is True  # updated in place, not reloaded
    assert figure(pg.text_content("[data-figure=site-today]")) == before + 3
    assert "running" in pg.text_content("[data-figure=daemon-state]")
    assert pg.local.outside == [] and pg.console_errors == []


def test_login_annotate_see_it_in_the_report_delete_logout(tmp_path, server, page_for):
    db = year_db(tmp_path / "counts.db", time.time(), days=10)
    s = server(web_config(tmp_path, db))
    pg = page_for()
    pg.goto(s.url + "/annotations")
    assert pg.url.startswith(s.url + "/login")  # reading needs the login here
    pg.fill("#password", "not the password")
    pg.click("form.login button[type=submit]")
    assert "That password is not right." in pg.text_content("main")
    pg.console_errors.clear()  # chromium logs the 401 of the refused login
    login(pg, s.url)
    pg.goto(s.url + "/annotations")
    today = pg.input_value("#first")
    pg.select_option("#kind", "estimate")
    pg.select_option("#sensor", "door-north")
    pg.fill("#from_time", "10:00")
    pg.fill("#to_time", "12:00")
    pg.fill("#note", "beam blocked by a ladder (web test)")
    pg.click("form.annotate button[type=submit]")
    assert "Annotation #1 added: estimate, door-north" in pg.text_content(".flash")
    assert "beam blocked by a ladder" in pg.text_content("tr[data-annotation='1']")
    listed = subprocess.run([sys.executable, "-m", "kiosk", "annotate", "--list", "--format", "json",
                             "--db", str(db)], capture_output=True, text=True, cwd=ROOT, timeout=60)
    a = json.loads(listed.stdout)[0]
    assert (a["kind"], a["sensor_id"], a["local_start"][:16]) == ("estimate", "door-north",
                                                                  f"{today}T10:00")
    pg.goto(s.url + f"/report/day?date={today}")
    assert "beam blocked by a ladder (web test)" in pg.text_content("article.report")
    pg.goto(s.url + "/annotations")
    pg.click("tr[data-annotation='1'] button")
    assert "Annotation #1 deleted" in pg.text_content(".flash")
    assert pg.locator("tr[data-annotation='1']").count() == 0
    pg.goto(s.url + f"/report/day?date={today}")
    assert "beam blocked by a ladder" not in pg.text_content("article.report")
    pg.click("header button:has-text('Log out')")
    assert "You are logged out." in pg.text_content(".flash")
    pg.goto(s.url + "/annotations")
    assert pg.url.startswith(s.url + "/login")
    assert pg.local.outside == [] and pg.console_errors == []


def test_report_moves_by_date_and_downloads(tmp_path, server, page_for, year):
    s = server(web_config(tmp_path, year, web="public_read = true\n"))
    pg = page_for(accept_downloads=True)
    pg.goto(s.url + "/report/week")
    pg.click(".spans a:has-text('month')")
    assert datetime.now().strftime("%B %Y") in pg.text_content("article.report h1")
    pg.click(".spans a:has-text('week')")
    label = pg.text_content("article.report h1")
    pg.click("a[rel=prev]")
    assert pg.text_content("article.report h1") != label
    pg.click("a[rel=next]")
    assert pg.text_content("article.report h1") == label
    with pg.expect_download() as dl:
        pg.click("a:has-text('CSV')")
    text = Path(dl.value.path()).read_text()
    assert text.startswith("# Visitor report at test-site") and "label,start,end,sensor_id,visits" in text
    with pg.expect_download() as dl:
        pg.click("a:has-text('HTML (self-contained)')")
    html = Path(dl.value.path()).read_text()
    assert html.startswith("<!DOCTYPE html>") and "<svg" in html and "http" not in html.split("<body>")[1]
    assert pg.local.outside == []


def test_screenshots_at_phone_and_desktop_widths(tmp_path, server, page_for, year):
    s = server(web_config(tmp_path, year))
    out = shots_dir(tmp_path)
    for name, size in (("phone", PHONE), ("desktop", DESKTOP)):
        pg = page_for(size)
        login(pg, s.url)
        for page, path in (("now", "/"), ("report-week", "/report/week"), ("journal", "/journal"),
                           ("annotations", "/annotations")):
            pg.goto(s.url + path)
            width = pg.evaluate("document.documentElement.scrollWidth")
            assert width <= size[0], f"{path} is {width} px wide at {size[0]} px: it scrolls sideways"
            shot = out / f"{page}-{name}.png"
            pg.screenshot(path=str(shot), full_page=True)
            assert shot.stat().st_size > 10_000
        assert pg.local.outside == [] and pg.console_errors == []


def test_no_serious_accessibility_violation(tmp_path, server, page_for, year):
    s = server(web_config(tmp_path, year))
    pg = page_for(bypass_csp=True)  # axe is injected as an inline script
    pg.goto(s.url + "/login")
    paths = ["/login", "/", "/report/day", "/report/week", "/report/month", "/report/year",
             "/journal?since=30d", "/annotations", "/report/fortnight"]
    found = {}
    for i, path in enumerate(paths):
        if i == 1:
            login(pg, s.url)
        pg.goto(s.url + path)
        pg.add_script_tag(path=str(AXE))
        violations = pg.evaluate("""async () => (await axe.run(document, {resultTypes: ['violations']}))
            .violations.map(v => ({id: v.id, impact: v.impact, help: v.help,
                                   nodes: v.nodes.slice(0, 3).map(n => n.html)}))""")
        bad = [v for v in violations if v["impact"] in ("serious", "critical")]
        if bad:
            found[path] = bad
    assert found == {}, json.dumps(found, indent=1)


def test_reading_works_without_javascript(tmp_path, server, page_for, year):
    s = server(web_config(tmp_path, year, web="public_read = true\n"))
    pg = page_for(java_script_enabled=False)
    pg.goto(s.url + "/")
    assert re.fullmatch(r"[\d,]+", pg.text_content("[data-figure=site-today]").strip())
    pg.goto(s.url + "/report/year")
    assert pg.locator("article.report svg rect").count() >= 12

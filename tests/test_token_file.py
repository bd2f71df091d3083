"""The upload token file: refused in one line that names the file and never its content,
in ``kiosk check-config``, ``kiosk sync`` and at daemon start; and no output anywhere
(stderr, journal, ``kiosk log``, ``kiosk status``, the database) ever holds the token."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from kiosk.cli import cli
from kiosk.exc import TokenFileError, UploadError
from kiosk.token_file import TOKEN_MAX_BYTES, read_token
from tests.conftest import DEVICE_SECTION, ROOT, SERIAL_SENSOR, config_text, upload_section, wait_for
from tests.hostile import HostileServer

A, B = "s3cr3t-AAAA-7f21e0", "s3cr3t-BBBB-9c44d1"  #: two halves of a token-like secret
GOOD = "tok-GOOD-5ab1c9e3"


def token_file(tmp_path: Path, content: str | bytes, mode: int = 0o600) -> Path:
    path = tmp_path / "token"
    path.unlink(missing_ok=True)
    path.write_bytes(content if isinstance(content, bytes) else content.encode("utf-8"))
    os.chmod(path, mode)
    return path


def no_secret(text: str) -> None:
    for secret in (A, B, GOOD, A[:10], B[-10:]):
        assert secret not in text, f"{secret!r} leaked: {text!r}"


REFUSED = [
    ("newline inside", f"{A}\n{B}\n", 0o600, "has a line break inside the token"),
    ("CR inside", f"{A}\r{B}", 0o600, "has a line break inside the token"),
    ("CRLF inside", f"{A}\r\n{B}\r\n", 0o640, "has a line break inside the token"),
    ("tab", f"{A}\t{B}", 0o600, "holds control characters"),
    ("escape", f"{A}\x1b[31m{B}", 0o600, "holds control characters"),
    ("C1 control", f"{A}\x85{B}", 0o600, "holds control characters"),
    ("NUL", f"{A}\x00{B}", 0o600, "holds control characters"),
    ("non-Latin-1", f"{A}€{B}", 0o600, "outside Latin-1"),
    ("not UTF-8", b"\xff\xfe" + A.encode() + B.encode(), 0o600, "is not UTF-8 text"),
    ("empty", "", 0o600, "is empty"),
    ("blank", " \n\n", 0o600, "is empty"),
    ("too big", A * (TOKEN_MAX_BYTES // len(A) + 1), 0o600, f"more than {TOKEN_MAX_BYTES} bytes"),
    ("group-writable", f"{A}{B}\n", 0o660, "is writable by its group (mode 0660)"),
    ("world-writable", f"{A}{B}\n", 0o602, "is usable by every user (mode 0602)"),
    ("world-readable", f"{A}{B}\n", 0o644, "is readable by every user (mode 0644)"),
    ("world-everything", f"{A}{B}\n", 0o666, "is readable by every user (mode 0666)"),
]


@pytest.mark.parametrize(("name", "content", "mode", "words"), REFUSED, ids=[r[0] for r in REFUSED])
def test_an_unsafe_token_file_is_refused_in_one_line_without_its_content(tmp_path, name, content,
                                                                       mode, words):
    path = token_file(tmp_path, content, mode)
    with pytest.raises(TokenFileError) as e:
        read_token(str(path))
    text = str(e.value)
    assert words in text and str(path) in text and "\n" not in text, text
    no_secret(text)
    assert isinstance(e.value, UploadError) and not e.value.missing


@pytest.mark.parametrize(("content", "mode"), [
    (f"{A}\n", 0o600), (f"{A}\r\n", 0o640), (f"  {A}\t\n", 0o400), (A, 0o440),
    (f"{A}é", 0o600), (f"{A}\n\n", 0o600),
])
def test_a_safe_token_file_gives_the_token_without_its_line_end(tmp_path, content, mode):
    expected = content.strip(" \t\r\n")
    assert read_token(str(token_file(tmp_path, content, mode))) == expected


def test_missing_directory_and_unreadable_token_files(tmp_path):
    with pytest.raises(TokenFileError, match="does not exist") as e:
        read_token(str(tmp_path / "none"))
    assert e.value.missing
    with pytest.raises(TokenFileError, match="is a directory"):
        read_token(str(tmp_path))


def config_with_token(tmp_path: Path, token: Path, url: str = "http://127.0.0.1:9/x") -> Path:
    cfg = tmp_path / "kiosk.toml"
    sensor = SERIAL_SENSOR.format(port=tmp_path / "no-such-tty")
    cfg.write_text(config_text(tmp_path / "counts.db", sensor, flush=0.5,
                               extra=upload_section(url, token, jitter_s=0),
                               device=DEVICE_SECTION))
    return cfg


@pytest.mark.parametrize(("name", "content", "mode", "words"),
                         [r for r in REFUSED if r[0] in ("newline inside", "non-Latin-1",
                                                         "group-writable", "empty")],
                         ids=["newline", "non-Latin-1", "group-writable", "empty"])
def test_check_config_and_sync_refuse_it_in_one_line(tmp_path, name, content, mode, words):
    cfg = config_with_token(tmp_path, token_file(tmp_path, content, mode))
    r = CliRunner().invoke(cli, ["check-config", str(cfg)])
    assert r.exit_code == 2, r.output
    (line,) = r.output.splitlines()
    assert line.startswith(f"kiosk: error: {cfg}: [upload] token_file: token file ")
    assert words in line
    no_secret(r.output)
    r = CliRunner().invoke(cli, ["sync", "--config", str(cfg)])
    assert r.exit_code == 1, r.output
    (line,) = r.output.splitlines()
    assert line.startswith("kiosk: error: token file ") and words in line
    no_secret(r.output)


def test_check_config_notes_a_token_file_not_there_yet(tmp_path):
    cfg = config_with_token(tmp_path, tmp_path / "token")
    r = CliRunner().invoke(cli, ["check-config", str(cfg)])
    assert r.exit_code == 0, r.output
    assert "does not exist" in r.output and "uploads are paused" in r.output
    token_file(tmp_path, GOOD + "\n", 0o640)
    r = CliRunner().invoke(cli, ["check-config", str(cfg)])
    assert r.exit_code == 0 and "note:" not in r.output and "OK" in r.output


def _kiosk(*args: str) -> str:
    env = {k: v for k, v in os.environ.items() if k != "KIOSK_CONFIG"}
    r = subprocess.run([sys.executable, "-m", "kiosk", *args], cwd=ROOT, env=env,
                       capture_output=True, text=True, timeout=60)
    return r.stdout + r.stderr


def test_the_token_never_reaches_any_output(tmp_path, daemon):
    """A token with a line break at start, then a good one a server echoes back: stderr,
    the journal, kiosk log/status/sync/check-config and the database bytes are searched."""
    with HostileServer("echo-401") as server:
        token = token_file(tmp_path, f"{A}\n{B}\n")
        cfg = config_with_token(tmp_path, token, server.url)
        db = tmp_path / "counts.db"
        outputs = [_kiosk("check-config", str(cfg)), _kiosk("sync", "--config", str(cfg))]
        d = daemon(cfg)
        d.wait_ready()

        def journal() -> str:
            conn = sqlite3.connect(db)
            try:
                return "\n".join(r[0] for r in conn.execute("SELECT message FROM journal"))
            finally:
                conn.close()

        wait_for(lambda: "has a line break inside the token" in journal(), timeout=10,
                 what="the refusal at start")
        assert "uploads PAUSED: token file" in journal()
        outputs += [_kiosk("status", "--config", str(cfg)), _kiosk("log", "--config", str(cfg))]
        assert server.requests == []  # nothing was sent with it
        token_file(tmp_path, GOOD + "\n", 0o640)  # fixed: tried at once, and echoed back
        wait_for(lambda: "HTTP 401" in journal(), timeout=15, what="the echoing 401")
        assert server.requests[0][0]["Authorization"] == f"Bearer {GOOD}"
        outputs += [_kiosk("status", "--config", str(cfg)), _kiosk("log", "--config", str(cfg)),
                    _kiosk("sync", "--config", str(cfg))]
        assert d.terminate() == 0
    outputs.append(d.output())
    for out in outputs:
        assert "Traceback" not in out, out
        no_secret(out)
    assert "Denied Bearer [token]" in journal()
    for f in tmp_path.glob("counts.db*"):
        data = f.read_bytes()
        for secret in (A, B, GOOD):
            assert secret.encode() not in data, f"{secret} in {f.name}"

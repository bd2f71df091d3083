"""``kiosk check-config`` warns when [upload]'s token file is missing or unreadable.

The example config used to pass with no /etc/kiosk/token, and uploads then sat paused.
Real processes; the unreadable case runs as another uid (setpriv), as the service user would.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from tests.conftest import ROOT, config_text, simulated_sensor, upload_section


def check(config: Path, *prefix: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*prefix, sys.executable, "-m", "kiosk", "check-config", os.fspath(config)],
                          cwd=ROOT, capture_output=True, text=True, timeout=60, check=False,
                          env={**os.environ, "PYTHONPATH": os.fspath(ROOT)})


def write(directory: Path, token: Path) -> Path:
    path = directory / "kiosk.toml"
    path.write_text(config_text(directory / "counts.db", simulated_sensor("sim"),
                                extra=upload_section("https://stats.example.org/v1", token)))
    return path


def test_missing_token_is_a_warning(tmp_path):
    result = check(write(tmp_path, tmp_path / "token"))
    assert result.returncode == 0, result.stderr
    assert ": OK: device" in result.stdout
    assert f"warning: token file {tmp_path / 'token'} does not exist" in result.stderr
    assert "uploads are paused" in result.stderr


def test_token_in_place_gives_no_warning(tmp_path):
    token = tmp_path / "token"
    token.write_text("s3cret\n")
    token.chmod(0o640)
    result = check(write(tmp_path, token))
    assert result.returncode == 0 and result.stderr == "", result.stderr


def test_no_upload_section_no_token_talk(tmp_path):
    path = tmp_path / "kiosk.toml"
    path.write_text(config_text(tmp_path / "counts.db", simulated_sensor("sim")))
    result = check(path)
    assert result.returncode == 0 and "token" not in result.stdout + result.stderr


def test_token_unreadable_by_the_service_user(tmp_path):
    if os.geteuid() != 0 or shutil.which("setpriv") is None:
        pytest.skip("needs root and setpriv to run as another uid")
    public = Path(tempfile.mkdtemp(prefix="kiosk-token-"))
    try:
        public.chmod(0o755)
        token = public / "token"
        token.write_text("s3cret\n")
        token.chmod(0o600)  # root only: the service user (uid 61001 here) cannot read it
        config = write(public, token)
        config.chmod(0o644)
        result = check(config, "setpriv", "--reuid=61001", "--regid=61001", "--clear-groups")
    finally:
        shutil.rmtree(public)
    assert result.returncode == 0, result.stderr
    assert f"warning: token file {token} is not readable by this user" in result.stderr

"""deploy/fer-edge.service: systemd accepts it, and its hardening scores an exposure <= 3.0."""
from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

from .conftest import DEPLOY

UNIT = DEPLOY / "fer-edge.service"
MAX_EXPOSURE = 3.0


def unit_settings() -> dict[str, list[str]]:
    settings: dict[str, list[str]] = {}
    for line in UNIT.read_text().splitlines():
        line = line.strip()
        if not line or line.startswith(("#", ";", "[")):
            continue
        key, _, value = line.partition("=")
        settings.setdefault(key.strip(), []).append(value.strip())
    return settings


def runnable_copy(tmp_path: Path) -> Path:
    """The unit with ExecStart pointing at an executable that exists (verify checks that)."""
    exe = tmp_path / "fer-edge"
    exe.write_text("#!/bin/sh\nexit 0\n")
    exe.chmod(0o755)
    text = UNIT.read_text()
    assert "ExecStart=/opt/fer-edge/venv/bin/fer-edge " in text
    unit = tmp_path / "fer-edge.service"
    unit.write_text(text.replace("ExecStart=/opt/fer-edge/venv/bin/fer-edge ", f"ExecStart={exe} "))
    return unit


def test_unit_runs_the_service_command_as_notify_with_watchdog():
    s = unit_settings()
    assert s["ExecStart"] == ["/opt/fer-edge/venv/bin/fer-edge run --config /etc/fer-edge/config.toml"]
    assert s["Type"] == ["notify"] and s["NotifyAccess"] == ["main"]
    assert s["WatchdogSec"] and s["Restart"] == ["on-failure"]
    assert s["User"] == ["fer-edge"] and s["Group"] == ["fer-edge"] and s["SupplementaryGroups"] == ["video"]
    assert s["StateDirectory"] == ["fer-edge"] and s["LogsDirectory"] == ["fer-edge"]
    assert s["StartLimitIntervalSec"] and s["StartLimitBurst"]
    # The camera needs /dev: devices are fenced by the device cgroup instead of PrivateDevices.
    assert s["PrivateDevices"] == ["no"] and s["DevicePolicy"] == ["closed"]
    assert "char-video4linux rw" in s["DeviceAllow"] and "char-media rw" in s["DeviceAllow"]
    assert s["CapabilityBoundingSet"] == [""] and s["ProtectSystem"] == ["strict"]


def test_fer_edge_gives_up_on_a_lost_source_before_the_watchdog_fires():
    """Exit 4 with fer-edge's own message, not a watchdog kill; permanent errors are not retried."""
    from fer_edge.config import SourceConfig

    s = unit_settings()
    watchdog = float(s["WatchdogSec"][0].rstrip("s"))
    src = SourceConfig()
    assert watchdog > src.frame_timeout_s + src.max_reconnect_s + 5, s["WatchdogSec"]
    assert set(s["RestartPreventExitStatus"][0].split()) == {"2", "3", "6"}  # usage, bad input, no device
    assert "4" not in s["RestartPreventExitStatus"][0]  # a lost camera is worth another try


def test_systemd_analyze_verify(systemd_analyze, tmp_path):
    unit = runnable_copy(tmp_path)
    proc = subprocess.run([systemd_analyze, "verify", str(unit)], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    # verify prints warnings (unknown keys, bad values) without failing: there must be none about us.
    complaints = [line for line in proc.stderr.splitlines() if "fer-edge.service" in line]
    assert not complaints, "\n".join(complaints)


def test_security_exposure_at_most_3(systemd_analyze, tmp_path):
    unit = runnable_copy(tmp_path)
    proc = subprocess.run(
        [systemd_analyze, "security", "--offline=true", "--no-pager", str(unit)],
        capture_output=True, text=True, timeout=60,
    )
    if proc.returncode != 0 and "--offline" in proc.stderr:
        pytest.skip(f"this systemd-analyze has no --offline (systemd < 250): {proc.stderr.strip()}")
    out = proc.stdout + proc.stderr
    match = re.search(r"Overall exposure level for fer-edge\.service:\s*([0-9.]+)", out)
    assert match, out
    exposure = float(match.group(1))
    print(f"systemd-analyze security exposure: {exposure}")
    assert exposure <= MAX_EXPOSURE, out

"""deploy/install.sh and the other deploy scripts: shellcheck-clean, an honest --dry-run, and a
real install into a staging root (--root): files, the pinned dependencies, the installed runtime
running on a real-face clip, idempotence, config kept, uninstall, purge."""
from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from .conftest import DEPLOY, REPO

INSTALL = DEPLOY / "install.sh"
SCRIPTS = sorted(DEPLOY.glob("*.sh"))


def run_install(bash: str, *args: str, env: dict[str, str] | None = None, timeout: float = 300):
    full_env = dict(os.environ)
    full_env.update(env or {})
    proc = subprocess.run([bash, str(INSTALL), *args], capture_output=True, text=True, timeout=timeout, env=full_env)
    return proc


def commands(output: str) -> list[str]:
    return [line[2:] for line in output.splitlines() if line.startswith("+ ")]


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda p: p.name)
def test_shellcheck_clean(shellcheck, script):
    proc = subprocess.run([shellcheck, "--severity=style", str(script)], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_scripts_are_strict_and_executable():
    assert SCRIPTS, "no scripts in deploy/"
    for script in SCRIPTS:
        assert "set -euo pipefail" in script.read_text(), script.name
        assert os.access(script, os.X_OK), f"{script.name} is not executable"


def test_dry_run_on_a_pi_lists_every_step_and_changes_nothing(bash, tmp_path):
    model = tmp_path / "model"
    model.write_bytes(b"Raspberry Pi 5 Model B Rev 1.0\0")
    root = tmp_path / "root"
    proc = run_install(bash, "--dry-run", "--root", str(root), env={"FER_EDGE_MODEL_FILE": str(model)})
    assert proc.returncode == 0, proc.stdout + proc.stderr
    out = proc.stdout
    print(out)
    assert "Raspberry Pi detected: Raspberry Pi 5 Model B" in out
    assert "python3-picamera2" in out
    cmds = commands(out)
    venv = f"{root}/opt/fer-edge/venv"
    assert f"/usr/bin/python3 -m venv --system-site-packages {venv}" in cmds
    pip = [c for c in cmds if " -m pip install " in c]
    assert len(pip) == 1 and f"--constraint {DEPLOY}/constraints-pi.txt" in pip[0]
    assert "[" not in pip[0], "runtime only: no extras (no TensorFlow)"
    assert "useradd --system" in out and "--groups video" in out
    assert any(c.startswith(f"install -m 0640 {DEPLOY}/config.example.toml {root}/etc/fer-edge/config.toml") for c in cmds)
    assert any(c.endswith(f"> {root}/etc/systemd/system/fer-edge.service") for c in cmds)
    assert "systemctl enable fer-edge.service" in out
    assert "dry run: nothing was changed" in out
    assert not root.exists(), "--dry-run created the staging root"


def test_dry_run_without_root_prints_host_commands(bash):
    """As a normal user on a non-Pi: what `sudo install.sh` would do, nothing done."""
    proc = run_install(bash, "--dry-run", "--no-apt", env={"FER_EDGE_MODEL_FILE": "/nonexistent"})
    assert proc.returncode == 0, proc.stdout + proc.stderr
    cmds = commands(proc.stdout)
    assert "not a Raspberry Pi" in proc.stdout and "python3-picamera2" not in " ".join(cmds)
    assert "/usr/bin/python3 -m venv --system-site-packages /opt/fer-edge/venv" in cmds or "venv exists" in proc.stdout
    assert any(c.endswith("> /etc/systemd/system/fer-edge.service") for c in cmds) or "unit unchanged" in proc.stdout


def test_bad_options_fail_with_a_message(bash):
    proc = run_install(bash, "--frobnicate")
    assert proc.returncode != 0 and "unknown option" in proc.stderr
    proc = run_install(bash, "--dry-run", "--purge")
    assert proc.returncode != 0 and "--purge goes with --uninstall" in proc.stderr
    proc = run_install(bash, "--dry-run", "--prefix", "relative/dir")
    assert proc.returncode != 0 and "absolute" in proc.stderr


NETWORK_ERRORS = ("NewConnectionError", "Failed to establish a new connection", "Temporary failure in name resolution",
                  "No matching distribution found", "Could not find a version that satisfies")


@pytest.fixture(scope="module")
def staged(bash, tmp_path_factory):
    """One real install into a staging root, dependencies included (pip, with the Pi constraints)."""
    root = tmp_path_factory.mktemp("staged") / "root"
    args = ["--root", str(root), "--no-start", "--no-apt", "--source", str(REPO)]
    first = run_install(bash, *args)
    if first.returncode != 0 and any(e in first.stdout + first.stderr for e in NETWORK_ERRORS):
        pytest.skip(f"pip could not reach the package index: {first.stderr.strip().splitlines()[-1:]}")
    assert first.returncode == 0, first.stdout + first.stderr
    return root, args, first


@pytest.mark.slow
def test_staged_install_files(staged):
    root, _args, first = staged
    venv = root / "opt/fer-edge/venv"
    assert (venv / "bin/fer-edge").is_file()
    assert "include-system-site-packages = true" in (venv / "pyvenv.cfg").read_text()
    config = root / "etc/fer-edge/config.toml"
    unit = root / "etc/systemd/system/fer-edge.service"
    assert config.read_text() == (DEPLOY / "config.example.toml").read_text()
    assert oct(config.stat().st_mode & 0o777) == "0o640"
    assert unit.read_text() == (DEPLOY / "fer-edge.service").read_text()
    assert (root / "opt/fer-edge/README-deploy.md").is_file()
    assert (root / "var/lib/fer-edge").is_dir() and (root / "var/log/fer-edge").is_dir()
    assert "skipped: useradd" in first.stdout and "skipped: systemctl" in first.stdout
    # The constraints hold: numpy 1.x and OpenCV < 4.12, as on the Pi; and no TensorFlow.
    probe = subprocess.run(
        [str(venv / "bin/python"), "-c",
         "import importlib.util as u, numpy, cv2, fer_edge_models; "
         "assert all(p.is_file() for p in fer_edge_models.FACE_DETECTORS.values()), 'detector models not installed'; "
         "print(numpy.__version__, cv2.__version__, u.find_spec('tensorflow') is None, fer_edge_models.MODELS_DIR)"],
        capture_output=True, text=True, timeout=120)
    assert probe.returncode == 0, probe.stderr
    np_version, cv_version, no_tf, models_dir = probe.stdout.split()
    assert np_version.startswith("1."), np_version
    assert tuple(int(x) for x in cv_version.split(".")[:2]) < (4, 12), cv_version
    assert no_tf == "True", "TensorFlow must not be installed on the device"
    assert models_dir.startswith(str(venv)), models_dir  # the installed copy, not the repo


@pytest.mark.slow
def test_staged_runtime_runs_with_the_pi_pins(staged, tiny_tflite_model, face_clip, tmp_path):
    """The installed runtime, with the Pi's pinned numpy 1.x / OpenCV 4.11, processes a real-face clip
    the way the service does (`fer-edge run --config`): the dev venv's newer versions cannot show this."""
    root, _args, _first = staged
    clip = Path(getattr(face_clip, "path", None) or face_clip[0])
    events = tmp_path / "events.jsonl"
    cfg = tmp_path / "config.toml"
    cfg.write_text(f'max_frames = 16\n[source]\npath = "{clip}"\n[classifier]\nmodel = "{tiny_tflite_model}"\n'
                   f'[log]\njsonl = "{events}"\nsummary_every_s = 0.0\n')
    proc = subprocess.run([str(root / "opt/fer-edge/venv/bin/fer-edge"), "run", "--config", str(cfg)],
                          capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    lines = events.read_text().splitlines()
    assert lines, "no events logged"


@pytest.mark.slow
def test_staged_reinstall_is_idempotent_then_uninstall_and_purge(bash, staged):
    """Second run: the user's config survives, only the package is reinstalled; then removal."""
    root, args, _first = staged
    config = root / "etc/fer-edge/config.toml"
    unit = root / "etc/systemd/system/fer-edge.service"
    venv = root / "opt/fer-edge/venv"
    config.write_text(config.read_text() + "\n# edited by the user\n")
    second = run_install(bash, *args, "--no-deps")  # --no-deps: fast, and the deps are there already
    assert second.returncode == 0, second.stdout + second.stderr
    assert config.read_text().endswith("# edited by the user\n")
    assert "kept existing /etc/fer-edge/config.toml" in second.stdout
    assert "unit unchanged" in second.stdout
    changed = [c for c in commands(second.stdout) if " -m pip install " not in c and "fer-edge-install." not in c]
    assert changed == [], f"second run changed more than the package: {changed}"

    # Uninstall keeps config and logs; --purge removes them.
    (root / "var/log/fer-edge/events.jsonl").write_text('{"type": "event"}\n')
    gone = run_install(bash, "--uninstall", "--root", str(root))
    assert gone.returncode == 0, gone.stdout + gone.stderr
    assert not venv.exists() and not unit.exists() and not (root / "opt/fer-edge").exists()
    assert config.is_file() and (root / "var/log/fer-edge/events.jsonl").is_file()
    purged = run_install(bash, "--uninstall", "--purge", "--root", str(root))
    assert purged.returncode == 0, purged.stdout + purged.stderr
    assert not (root / "etc/fer-edge").exists() and not (root / "var/log/fer-edge").exists()
    assert not (root / "var/lib/fer-edge").exists()


def test_install_refuses_to_run_unprivileged_for_real(bash):
    prefix: list[str] = []
    if os.geteuid() == 0:  # as root (CI): ask as `nobody`
        runuser = shutil.which("runuser")
        if runuser is None:
            pytest.skip("running as root without runuser: cannot try as a normal user")
        prefix = [runuser, "-u", "nobody", "--"]
    proc = subprocess.run([*prefix, bash, str(INSTALL), "--no-apt"], capture_output=True, text=True, timeout=60)
    assert proc.returncode != 0 and "run as root" in proc.stderr

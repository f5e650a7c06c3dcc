#!/usr/bin/env bash
# Architecture proof: install fer-edge (runtime only, no TensorFlow) into a Debian Bookworm arm64
# root -- the userland of Raspberry Pi OS 64-bit -- and run it there on a real-face clip, under
# qemu-user emulation. Proves that the aarch64 wheels (numpy<2, opencv-python-headless<4.12,
# ai-edge-litert, ...) resolve with deploy/constraints-pi.txt, install with pip --no-index, import,
# and that the whole pipeline logs events on arm64.
#
#   sudo deploy/arm64_proof.sh [--root DIR] [--frames N] [--python PATH]
#
# Not part of the test suite (it needs root, binfmt_misc and ~10 minutes the first time).
# Needs: Debian/Ubuntu host, root, network for debootstrap and pip download (first run).
# ROOT (default .arm64/root in the repo, git-ignored) is reused between runs: debootstrap
# runs only when ROOT/usr/bin/python3 is missing. The venv inside is made afresh every run.
set -euo pipefail

SCRIPT_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO_DIR="$(cd "$SCRIPT_DIR/.." && pwd)"
ROOT=$REPO_DIR/.arm64/root
FRAMES=30
HOST_PY=""
SUITE=bookworm
MIRROR=http://deb.debian.org/debian
# Runtime dependencies published only as source distributions: built into (pure-Python) wheels on
# the host, since the target has no network and no build tools.
SDIST_ONLY=(sdnotify)

usage() {
    sed -n '2,16p' "$0" | sed 's/^# \{0,1\}//'
}

die() {
    echo "arm64_proof: error: $*" >&2
    exit 1
}

step() {
    echo
    echo "=== $*"
}

while [[ $# -gt 0 ]]; do
    case $1 in
        --root) ROOT=${2:?}; shift 2 ;;
        --frames) FRAMES=${2:?}; shift 2 ;;
        --python) HOST_PY=${2:?}; shift 2 ;;
        -h | --help) usage; exit 0 ;;
        *) die "unknown option: $1" ;;
    esac
done

[[ $EUID -eq 0 ]] || die "run as root (debootstrap, chroot and mounts need it)"
ROOT="$(realpath -m -- "$ROOT")"
[[ $ROOT != / ]] || die "--root must not be /"
WORK=$(dirname "$ROOT")/work
if [[ -z $HOST_PY ]]; then
    if [[ -x $REPO_DIR/.venv/bin/python ]]; then HOST_PY=$REPO_DIR/.venv/bin/python; else HOST_PY=python3; fi
fi

step "host tools: debootstrap, qemu-user-static, binfmt_misc"
if ! command -v debootstrap >/dev/null || ! command -v qemu-aarch64-static >/dev/null; then
    apt-get update
    DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends debootstrap qemu-user-static
fi
if [[ ! -e /proc/sys/fs/binfmt_misc/register ]]; then
    mount -t binfmt_misc binfmt_misc /proc/sys/fs/binfmt_misc
fi
if [[ ! -e /proc/sys/fs/binfmt_misc/qemu-aarch64 ]]; then
    # Once per machine; "File exists" means another run registered it first.
    cat /usr/lib/binfmt.d/qemu-aarch64.conf >/proc/sys/fs/binfmt_misc/register 2>/dev/null || true
fi
[[ -e /proc/sys/fs/binfmt_misc/qemu-aarch64 ]] || die "could not register qemu-aarch64 with binfmt_misc"
grep -E '^(enabled|interpreter|flags)' /proc/sys/fs/binfmt_misc/qemu-aarch64

step "arm64 Debian $SUITE root: $ROOT"
if [[ -x $ROOT/usr/bin/python3 ]]; then
    echo "reusing it (delete $ROOT to start over)"
else
    mkdir -p "$ROOT"
    debootstrap --arch=arm64 --variant=minbase --include=python3,python3-venv "$SUITE" "$ROOT" "$MIRROR"
fi

MOUNTS=()
cleanup() {
    local i
    for ((i = ${#MOUNTS[@]} - 1; i >= 0; i--)); do
        umount -l "${MOUNTS[i]}" 2>/dev/null || true
    done
}
trap cleanup EXIT
# mount_in DIR MOUNT-ARGS...: mount onto ROOT/DIR, once; unmounted on exit (trap).
mount_in() {
    local target=$ROOT$1
    shift
    [[ -e $target ]] || mkdir -p "$target"
    if ! mountpoint -q "$target"; then
        mount "$@" "$target"
        MOUNTS+=("$target")
    fi
}

step "aarch64 wheels (fetched on the host; the arm64 root installs with --no-index)"
rm -rf "$WORK"
mkdir -p "$WORK/wheels" "$WORK/src"
tar -C "$REPO_DIR" --exclude=./.git --exclude=./.venv --exclude=./.arm64 --exclude=./shared \
    --exclude=./build --exclude=./dist --exclude=./runs --exclude='*.egg-info' \
    --exclude=__pycache__ --exclude=.pytest_cache -cf - . | tar -C "$WORK/src" -xf -
"$HOST_PY" -m pip wheel -q --no-deps --no-build-isolation -w "$WORK/wheels" "$WORK/src"
"$HOST_PY" -m pip wheel -q --no-deps -w "$WORK/wheels" "${SDIST_ONLY[@]}"
wheels=("$WORK"/wheels/fer_edge-*.whl)
PROJECT_WHEEL=${wheels[0]}
"$HOST_PY" -m pip download -q --only-binary=:all: --python-version 3.11 \
    --platform manylinux_2_17_aarch64 --platform manylinux_2_27_aarch64 \
    --platform manylinux_2_28_aarch64 --platform manylinux2014_aarch64 \
    --find-links "$WORK/wheels" -c "$SCRIPT_DIR/constraints-pi.txt" -d "$WORK/wheels" "$PROJECT_WHEEL"
ls "$WORK/wheels"

step "a real-face clip and an int8 model (made on the host)"
"$HOST_PY" - "$WORK" "$REPO_DIR" <<'PY'
import shutil, sys
from pathlib import Path

import cv2
import numpy as np
from skimage import data

work, repo = Path(sys.argv[1]), Path(sys.argv[2])
# The astronaut photo's head (a real face) crossing a plain background, 640x480, 48 frames.
bgr = np.ascontiguousarray(data.astronaut()[:, :, ::-1])
x, y, w, h = 170, 40, 110, 130
cx, cy, half = x + w // 2, y + h // 2, int(max(w, h) * 0.95)
head = cv2.resize(bgr[max(0, cy - half):cy + half, max(0, cx - half):cx + half], (200, 200))
yy, xx = np.mgrid[0:480, 0:640].astype(np.float32)
bg = np.clip(np.stack([90 + 60 * xx / 640, 110 + 40 * yy / 480, 140 - 30 * xx / 640], -1), 0, 255).astype(np.uint8)
writer = cv2.VideoWriter(str(work / "clip.mp4"), cv2.VideoWriter_fourcc(*"mp4v"), 15.0, (640, 480))
assert writer.isOpened()
for i, px in enumerate(np.linspace(20, 420, 48).astype(int)):
    frame = bg.copy()
    py = 140 + int(10 * np.sin(i / 4))
    frame[py:py + 200, px:px + 200] = head
    writer.write(frame)
writer.release()
print("clip:", work / "clip.mp4", (work / "clip.mp4").stat().st_size, "bytes, 48 frames 640x480")

model_dir = work / "model"
model_dir.mkdir()
shipped = repo / "models" / "fer_default_int8.tflite"
if shipped.is_file():
    shutil.copy(shipped, model_dir / shipped.name)
    card = shipped.with_suffix(".json")
    if card.is_file():
        shutil.copy(card, model_dir / card.name)
    print("model: the shipped", shipped.name)
else:
    sys.path.insert(0, str(repo))
    from tests.edge.conftest import build_tiny_tflite, face_crops

    path = build_tiny_tflite(model_dir, face_crops(bgr, (x, y, w, h)))
    print("model: no shipped model; built the tests' tiny int8 model (random weights):", path.name)
PY
models=("$WORK"/model/*.tflite)
MODEL=${models[0]}

step "install and run inside the arm64 root (chroot + qemu-aarch64)"
rm -rf "$ROOT/proof"
mkdir -p "$ROOT/proof"
cp -r "$WORK/wheels" "$WORK/model" "$WORK/clip.mp4" "$ROOT/proof/"
cat >"$ROOT/proof/config.toml" <<EOF
max_frames = $FRAMES
[source]
path = "/proof/clip.mp4"
[detector]
kind = "blazeface"
[classifier]
model = "/proof/model/$(basename "$MODEL")"
threads = 2
[log]
jsonl = "/proof/events.jsonl"
summary_every_s = 0.0
EOF
# Plain (non-recursive) binds: unmounting them can never reach the host's submounts.
mount_in /proc -t proc proc
mount_in /sys --bind /sys
mount_in /dev --bind /dev
if [[ $(uname -m) != aarch64 ]]; then
    # qemu-user (7.2, Bookworm's) passes the host's x86 /proc/cpuinfo through. TFLite's cpuinfo
    # library parses it on ARM Linux, finds no ARM core and crashes (SIGSEGV in the Interpreter
    # constructor). Show it what a Raspberry Pi 4 shows: Cortex-A72 cores, one per host CPU.
    present=$(cat /sys/devices/system/cpu/present)
    ncpu=$(nproc --all)
    {
        for ((i = 0; i < ncpu; i++)); do
            printf 'processor\t: %d\nBogoMIPS\t: 108.00\nFeatures\t: fp asimd evtstrm crc32 cpuid\n' "$i"
            printf 'CPU implementer\t: 0x41\nCPU architecture: 8\nCPU variant\t: 0x0\nCPU part\t: 0xd08\nCPU revision\t: 3\n\n'
        done
        printf 'Hardware\t: BCM2835\nRevision\t: c03111\nModel\t\t: Raspberry Pi 4 Model B Rev 1.1 (emulated)\n'
    } >"$WORK/cpuinfo"
    echo "emulated /proc/cpuinfo: $ncpu Cortex-A72 cores (host CPUs present: $present)"
    mount_in /proc/cpuinfo --bind "$WORK/cpuinfo"
fi

# The script is expanded by the shell inside the arm64 root, hence the single quotes.
# shellcheck disable=SC2016
chroot "$ROOT" /usr/bin/env -i PATH=/usr/local/bin:/usr/bin:/bin HOME=/root LANG=C.UTF-8 /bin/bash -euo pipefail -c '
echo "uname -m: $(uname -m)   $(. /etc/os-release; echo "$PRETTY_NAME")   $(python3 -V)"
rm -rf /opt/fer-edge/venv
python3 -m venv --system-site-packages /opt/fer-edge/venv
/opt/fer-edge/venv/bin/pip install -q --disable-pip-version-check --no-index --find-links /proof/wheels fer-edge
/opt/fer-edge/venv/bin/pip list --disable-pip-version-check 2>/dev/null | grep -iE "^(fer-edge|numpy|opencv-python-headless|ai-edge-litert|paho-mqtt|prometheus.client|sdnotify|click) "
if /opt/fer-edge/venv/bin/python -c "import tensorflow" 2>/dev/null; then echo "TensorFlow is installed: it must not be"; exit 1; fi
echo "tensorflow: not installed (runtime only)"
/opt/fer-edge/venv/bin/python -c "from fer_edge_models import FACE_DETECTORS as d; missing = [str(p) for p in d.values() if not p.is_file()]; assert not missing, missing; print(\"face detectors installed:\", \", \".join(p.name for p in d.values()))"
/opt/fer-edge/venv/bin/python -c "import platform, numpy, cv2; from fer_edge.classifier import interpreter_backend as b; print(platform.machine(), \"numpy\", numpy.__version__, \"opencv\", cv2.__version__, \"interpreter\", b().name)"
cd /proof
time /opt/fer-edge/venv/bin/fer-edge run --config /proof/config.toml
'

step "events logged on arm64"
EVENTS=$ROOT/proof/events.jsonl
[[ -s $EVENTS ]] || die "no events were logged: $EVENTS is missing or empty"
cat "$EVENTS"
"$HOST_PY" - "$EVENTS" "$FRAMES" <<'PY'
import json, sys

lines = [json.loads(line) for line in open(sys.argv[1])]
events = [e for e in lines if e.get("type", "event") == "event"]
tracks = sorted({e["track_id"] for e in events})
frames = sorted({e["frame"] for e in events})
print(f"{len(events)} events over {len(frames)} frames (of {sys.argv[2]} read), track IDs {tracks}")
assert events, "no events"
assert len(tracks) == 1, f"expected one track for one face, got {tracks}"
print("arm64 proof: OK")
PY

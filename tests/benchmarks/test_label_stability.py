"""benchmarks/label_stability.py and clip.py: the measures are right on sequences whose answer is known,
and the clip script answers --help."""
from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[2]
spec = importlib.util.spec_from_file_location("label_stability", REPO / "benchmarks" / "label_stability.py")
L = importlib.util.module_from_spec(spec)
spec.loader.exec_module(L)
LABELS = ["a", "b", "c"]


def flicker(n=300, seed=0):
    """'a' with a close 'b' that wins one frame in four; from frame 200 on, a clear, lasting 'c'."""
    rng = np.random.default_rng(seed)
    seq = []
    for i in range(n):
        if i >= 200:
            seq.append([0.1, 0.1, 0.8])
        elif rng.random() < 0.25:
            seq.append([0.4, 0.5, 0.1])
        else:
            seq.append([0.5, 0.4, 0.1])
    return {1: np.asarray(seq, np.float32)}


def test_replay_counts_changes_agreement_and_lag():
    seqs = flicker()
    raw = L.replay(seqs, LABELS, 30.0, smoothing="none", switch_margin=0.0, switch_frames=0)
    argmax = seqs[1].argmax(1)
    assert raw["label_changes"] == int((argmax[1:] != argmax[:-1]).sum())
    assert raw["changes_per_min"] == round(raw["label_changes"] / (300 / 30 / 60), 1)
    assert raw["argmax_agreement_pct"] == 100.0 and raw["lag_frames_median"] == 0.0
    steady = L.replay(seqs, LABELS, 30.0, smoothing="none", switch_margin=0.3, switch_frames=4)
    assert steady["label_changes"] < raw["label_changes"] / 5  # the single-frame 'b's are held off
    assert steady["argmax_agreement_pct"] < 100.0
    assert steady["lasting_argmax_changes"] >= 1 and steady["lag_frames_median"] == 0.0  # 'c' leads by 0.7: at once


def test_lags_counts_frames_until_the_shown_label_follows():
    argmax = ["a"] * 5 + ["b"] * 10
    shown = ["a"] * 8 + ["b"] * 7
    assert L._lags(argmax, shown, hold=5) == [3]


def test_clip_script_help_does_not_write_a_clip(tmp_path):
    out = subprocess.run([sys.executable, str(REPO / "benchmarks" / "clip.py"), "--help"], cwd=tmp_path,
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0 and "--kind" in out.stdout and "handheld" in out.stdout
    assert list(tmp_path.iterdir()) == []

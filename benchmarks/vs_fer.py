"""fer-edge vs the `fer` package: end-to-end frames per second on the same clip, same machine.

    python benchmarks/vs_fer.py --model models/fer_default_int8.tflite --json runs/bench/vs_fer.json

Both pipelines run in their own subprocess, one thread each (OpenCV, the TFLite interpreter, BLAS),
over the same video, decoding included, for --warmup + --frames frames (the clip loops):

* fer-edge: `fer-edge bench` with its defaults (BlazeFace short range + alignment, the int8 model);
  with `--also-haar`, a second fer-edge row with `--detector haar` (the default until the face-stage
  work) runs in the same rounds, so before and after come from the same run;
* fer: `FER(use_tflite=True).detect_emotions(frame)` per frame -- the package's documented loop with
  its default Haar detector (full resolution, 40 px padding) and its quantised 64x64 TFLite model.

The rounds alternate (fer-edge, fer, fer-edge, fer, ...) so that load from other processes hits
both alike; the best round of each is compared (the least disturbed), and every round is kept in
the JSON.

`fer` needs TensorFlow and pins packages that clash with the runtime's (opencv-contrib-python,
whose newest release is OpenCV 5, which has no CascadeClassifier, so `FER()` fails with it), so
it lives in a venv of its own:

    python3 -m venv /tmp/fervenv
    /tmp/fervenv/bin/pip install --no-deps fer==25.10.3
    /tmp/fervenv/bin/pip install tensorflow-cpu "opencv-python-headless>=4.8,<5" pandas requests pillow tqdm

(`--no-deps` skips facenet-pytorch, i.e. PyTorch, used only by FER(mtcnn=True), and moviepy /
ffmpeg-python, used only for video files through fer.Video.)
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

ONE_THREAD_ENV = {"OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1", "MKL_NUM_THREADS": "1",
                  "TF_NUM_INTRAOP_THREADS": "1", "TF_NUM_INTEROP_THREADS": "1", "TF_CPP_MIN_LOG_LEVEL": "3",
                  "OPENCV_FOR_THREADS_NUM": "1", "PYTHONWARNINGS": "ignore"}

RUN_FER_EDGE = r"""
import sys, cv2
cv2.setNumThreads(1)
from fer_edge.cli import cli
clip, model, frames, warmup, out = sys.argv[1:6]
cli.main(["bench", "--source", clip, "--model", model, "--threads", "1", "--frames", frames,
          "--warmup", warmup, "--json", out, "-q", *sys.argv[6:]], standalone_mode=False)
"""

RUN_FER = r"""
import inspect, json, resource, sys, time
import cv2
import numpy as np
cv2.setNumThreads(1)
import tensorflow as tf
tf.config.threading.set_intra_op_parallelism_threads(1)
tf.config.threading.set_inter_op_parallelism_threads(1)
_Interpreter = tf.lite.Interpreter
class OneThreadInterpreter(_Interpreter):  # fer builds its own interpreter: pin it to one thread too
    def __init__(self, *args, **kwargs):
        kwargs["num_threads"] = 1
        super().__init__(*args, **kwargs)
tf.lite.Interpreter = OneThreadInterpreter
import fer as fer_pkg
try:
    from fer import FER
except ImportError:  # fer 25.10 no longer re-exports it
    from fer.fer import FER
def peak_rss_mb():  # as fer_edge.bench.peak_rss_mb: VmHWM, not ru_maxrss (which survives exec)
    for line in open("/proc/self/status"):
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
clip, frames, warmup, out = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
has_tflite = "use_tflite" in inspect.signature(FER.__init__).parameters
detector = FER(use_tflite=True) if has_tflite else FER()
cap = cv2.VideoCapture(clip)
times, faces, ends = [], [], []
n = 0
while n < warmup + frames:
    t0 = time.perf_counter()
    ok, frame = cap.read()
    if not ok:
        cap.release()
        cap = cv2.VideoCapture(clip)
        continue
    result = detector.detect_emotions(frame)
    t1 = time.perf_counter()
    n += 1
    if n > warmup:
        times.append((t1 - t0) * 1e3)
        faces.append(len(result))
        ends.append(t1)
fps = (len(ends) - 1) / (ends[-1] - ends[0]) if len(ends) > 1 else 0.0
json.dump({"fps": round(fps, 2), "frames": len(times), "frame_ms_p50": round(float(np.percentile(times, 50)), 2),
           "frame_ms_p95": round(float(np.percentile(times, 95)), 2), "faces_per_frame": round(float(np.mean(faces)), 3),
           "peak_rss_mb": round(peak_rss_mb(), 1),
           "fer_version": fer_pkg.__version__, "use_tflite": has_tflite, "tensorflow": tf.__version__,
           "opencv": cv2.__version__}, open(out, "w"))
"""


def run_fer_edge(clip: Path, model: Path, frames: int, warmup: int, tmp: Path, extra: list[str]) -> dict:
    out = tmp / "fer_edge.json"
    env = {**os.environ, **ONE_THREAD_ENV}
    proc = subprocess.run([sys.executable, "-c", RUN_FER_EDGE, str(clip), str(model), str(frames), str(warmup), str(out),
                           *extra], capture_output=True, text=True, env=env)
    if proc.returncode != 0:
        raise SystemExit(f"fer-edge bench failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    report = json.loads(out.read_text())
    total = report["total_ms"]
    return {"fps": report["fps"], "frames": report["frames"], "frame_ms_p50": total["p50"], "frame_ms_p95": total["p95"],
            "faces_per_frame": report["faces_per_frame"], "peak_rss_mb": report["peak_rss_mb"],
            "stages_ms": {k: v["p50"] for k, v in report["stages_ms"].items()},
            "classifier": report["classifier"], "detector": report["detector"]}


def run_fer(fer_python: str, clip: Path, frames: int, warmup: int, tmp: Path) -> dict:
    out = tmp / "fer.json"
    env = {**os.environ, **ONE_THREAD_ENV}
    proc = subprocess.run([fer_python, "-c", RUN_FER, str(clip), str(frames), str(warmup), str(out)],
                          capture_output=True, text=True, env=env)
    if proc.returncode != 0:
        raise SystemExit(f"the fer loop failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    return json.loads(out.read_text())


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--source", type=Path, help="video clip (default: the generated astronaut clip)")
    ap.add_argument("--model", type=Path, help="fer-edge model (default: the shipped one)")
    ap.add_argument("--fer-python", default="/tmp/fervenv/bin/python", help="python of the venv that has `fer`")
    ap.add_argument("--frames", type=int, default=200)
    ap.add_argument("--warmup", type=int, default=10)
    ap.add_argument("--rounds", type=int, default=2, help="alternating rounds per side; the best of each is compared")
    ap.add_argument("--json", type=Path, default=Path("runs/bench/vs_fer.json"))
    ap.add_argument("--also-haar", action="store_true",
                    help="also run fer-edge with --detector haar (the old default) in every round")
    ap.add_argument("--full-scan-every", type=int, default=None,
                    help="fer-edge's --full-scan-every (default: its own default; 1 = a full Haar search every "
                         "frame, as fer does)")
    args = ap.parse_args(argv)

    if args.model is None:
        from fer_edge_models import DEFAULT_MODEL

        args.model = DEFAULT_MODEL
    if not args.model.is_file():
        raise SystemExit(f"model not found: {args.model} (pass --model)")
    if not Path(args.fer_python).exists():
        raise SystemExit(f"{args.fer_python} not found: create the fer venv first (see this script's docstring)")
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        clip = args.source
        if clip is None:
            from clip import make_clip

            clip = make_clip(args.json.parent / "face_clip.mp4")
        rounds = []
        for r in range(args.rounds):
            extra = [] if args.full_scan_every is None else ["--full-scan-every", str(args.full_scan_every)]
            ours = run_fer_edge(clip, args.model, args.frames, args.warmup, tmp, extra)
            theirs = run_fer(args.fer_python, clip, args.frames, args.warmup, tmp)
            rounds.append({"fer_edge": ours, "fer": theirs})
            if args.also_haar:
                rounds[-1]["fer_edge_haar"] = run_fer_edge(clip, args.model, args.frames, args.warmup, tmp,
                                                           extra + ["--detector", "haar"])
            print(f"round {r + 1}: fer-edge {ours['fps']:.1f} fps, fer {theirs['fps']:.1f} fps", file=sys.stderr)
    best_ours = max((x["fer_edge"] for x in rounds), key=lambda d: d["fps"])
    best_fer = max((x["fer"] for x in rounds), key=lambda d: d["fps"])
    ratio = best_ours["fps"] / best_fer["fps"] if best_fer["fps"] else float("inf")
    report = {
        "clip": str(clip), "frames": args.frames, "warmup": args.warmup, "threads": 1,
        "fer_edge_options": [] if args.full_scan_every is None else ["--full-scan-every", str(args.full_scan_every)],
        "fer_edge": best_ours, "fer": best_fer, "ratio": round(ratio, 2), "target_ratio": 8.0,
        "rounds": rounds,
        "machine": {"platform": platform.platform(), "processor": platform.machine(), "cpus": os.cpu_count(),
                    "python": platform.python_version(), "loadavg": os.getloadavg()},
    }
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(report, indent=2) + "\n")
    rows = [("fer-edge", best_ours), ("fer", best_fer)]
    if args.also_haar:
        best_haar = max((x["fer_edge_haar"] for x in rounds), key=lambda d: d["fps"])
        report["fer_edge_haar"] = best_haar
        report["ratio_haar"] = round(best_haar["fps"] / best_fer["fps"], 2) if best_fer["fps"] else None
        rows.insert(1, ("fer-edge (haar)", best_haar))
        args.json.write_text(json.dumps(report, indent=2) + "\n")
    print(f"{'':16}{'fps':>8}{'ms p50':>9}{'ms p95':>9}{'faces/frame':>13}{'peak RSS MiB':>14}")
    for name, d in rows:
        print(f"{name:16}{d['fps']:>8.1f}{d['frame_ms_p50']:>9.1f}{d['frame_ms_p95']:>9.1f}"
              f"{d['faces_per_frame']:>13.2f}{d['peak_rss_mb']:>14.0f}")
    print(f"fer-edge / fer = {ratio:.2f}x (target >= 8x)   -> {args.json}")
    return report


if __name__ == "__main__":
    main()

"""Training throughput: images/s of real `fer-train fit` training steps, one setting changed at a time.

Each setting runs in its own process (the thread count and the precision policy must be set before
TensorFlow starts): the model from fer_train.models, compiled as `fit` compiles it (AdamW, categorical
cross-entropy, accuracy), fed by fer_train.augment.TrainBatches (the host-side augmentation of fit),
`model.fit` for a few warm-up steps (tracing), then timed over `--steps` steps. Faces: Training rows of
../shared/data/fer2013.npz when present, else random pixels (speed does not depend on content).

The CPU may be shared: every row records the 1-minute load average before and after, and also the
process CPU time of the timed steps, so `img/CPU-s` (images per CPU-second, all threads together)
compares settings even when other jobs take wall-clock time from them; `img/s` is wall-clock and
only as good as the machine was quiet. Stop other jobs (or `kill -STOP` a background run) for clean
figures.

    python benchmarks/train_speed.py                  # the default set of settings, table + JSON
    python benchmarks/train_speed.py --models edgenet_s --steps 20
Writes benchmarks/results/train_speed.json (and prints the table).
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
BASE = {"precision": "float32", "batch_size": 128, "threads": 2, "augment": True}
#: one factor at a time from BASE (per model); the channel counts of both edgenets are already
#: multiples of 32 (32/64/128/256 and 32/64/96), so no channel variant is listed
VARIANTS = [
    {},
    {"precision": "mixed_bfloat16"},
    {"batch_size": 64},
    {"batch_size": 256},
    {"threads": 1},
    {"augment": False},
    {"runtime_aug": True},  # the recipes' runtime-crop variation (blur, contrast, brightness, JPEG, noise)
]


def measure(setting: dict) -> dict:
    """Run in a fresh process: images/s of `steps` timed training steps for one setting."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    import numpy as np
    import tensorflow as tf

    tf.config.threading.set_intra_op_parallelism_threads(int(setting["threads"]))
    tf.config.threading.set_inter_op_parallelism_threads(1)
    import keras

    keras.mixed_precision.set_global_policy(setting["precision"])
    from fer_train import models as M
    from fer_train.augment import AugmentConfig, TrainBatches

    keras.utils.set_random_seed(0)
    bs, steps, warm = int(setting["batch_size"]), int(setting["steps"]), int(setting["warmup"])
    n = bs * (steps + warm)
    data = REPO.parent / "shared" / "data" / "fer2013.npz"
    if data.is_file():
        with np.load(data) as d:
            x, y = d["pixels"][d["usage"] == 0][:n], d["emotion"][d["usage"] == 0][:n]
        source = "fer2013.npz Training"
    else:
        rng = np.random.default_rng(0)
        x, y = rng.integers(0, 256, (n, 48, 48), dtype=np.uint8), rng.integers(0, 7, n)
        source = "random pixels"
    targets = np.eye(7, dtype=np.float32)[y]
    runtime = bool(setting.get("runtime_aug"))
    aug = AugmentConfig(enabled=bool(setting["augment"]), erasing=0.25,
                        **({"blur": 0.15, "brightness": 0.08, "contrast": 0.2, "jpeg": 0.2, "noise": 3.0} if runtime else {}))
    batches = TrainBatches(x, targets, bs, aug, seed=0)
    model = M.build_model(setting["model"], (48, 48), 7)
    model.compile(optimizer=keras.optimizers.AdamW(1e-3, weight_decay=1e-4),
                  loss=keras.losses.CategoricalCrossentropy(), metrics=["accuracy"], jit_compile=False)
    model.fit(batches, epochs=1, steps_per_epoch=warm, verbose=0, shuffle=False)  # trace + warm caches
    load0 = os.getloadavg()[0]
    c0, t0 = time.process_time(), time.perf_counter()
    hist = model.fit(batches, epochs=1, steps_per_epoch=steps, verbose=0, shuffle=False)
    dt, cpu = time.perf_counter() - t0, time.process_time() - c0
    # the host side alone: augmenting the same number of batches
    t1 = time.perf_counter()
    for i in range(steps):
        batches[i % len(batches)]
    host = time.perf_counter() - t1
    return {**setting, "images_per_s": round(bs * steps / dt, 1), "seconds": round(dt, 2),
            "images_per_cpu_s": round(bs * steps / cpu, 1), "cpu_seconds": round(cpu, 2),
            "host_augment_share_pct": round(100 * host / dt, 1), "loss": round(float(hist.history["loss"][-1]), 4),
            "load_before": round(load0, 2), "load_after": round(os.getloadavg()[0], 2), "faces": source,
            "params": M.count_params(model)}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", default="edgenet,edgenet_s")
    ap.add_argument("--steps", type=int, default=15, help="timed training steps per setting")
    ap.add_argument("--warmup", type=int, default=4)
    ap.add_argument("--out", default=str(HERE / "results" / "train_speed.json"))
    ap.add_argument("--one", help=argparse.SUPPRESS)  # internal: measure one setting (JSON) in this process
    args = ap.parse_args(argv)
    if args.one:
        print("RESULT " + json.dumps(measure(json.loads(args.one))))
        return 0
    rows = []
    settings = [{**BASE, **v, "model": m, "steps": args.steps, "warmup": args.warmup}
                for m in args.models.split(",") for v in VARIANTS]
    try:
        from tqdm import tqdm

        progress = tqdm(settings, desc="settings", unit="setting", file=sys.stderr)
    except ImportError:  # pragma: no cover
        progress = settings
    for s in progress:
        proc = subprocess.run([sys.executable, __file__, "--one", json.dumps(s)], capture_output=True, text=True,
                              env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"})
        line = next((ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")), None)
        if line is None:
            rows.append({**s, "error": (proc.stderr.strip().splitlines() or ["no output"])[-1]})
        else:
            rows.append(json.loads(line[len("RESULT "):]))
        write(args, rows)  # after every setting: a killed benchmark keeps what it measured
    return 0


def write(args, rows: list[dict]) -> None:
    base = {r["model"]: r for r in rows if "images_per_s" in r
            and all(r.get(k) == v for k, v in BASE.items()) and not r.get("runtime_aug")}
    for r in rows:
        if "images_per_s" in r and r["model"] in base:
            r["vs_base"] = round(r["images_per_s"] / base[r["model"]]["images_per_s"], 2)
            r["cpu_vs_base"] = round(r["images_per_cpu_s"] / base[r["model"]]["images_per_cpu_s"], 2)
    header = ("model", "precision", "batch", "threads", "augment", "img/s", "vs base", "img/CPU-s", "vs base (CPU)",
              "host aug %", "load")
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for r in rows:
        aug = ("runtime-crop" if r.get("runtime_aug") else "on") if r["augment"] else "off"
        lines.append("| " + " | ".join(str(v) for v in (
            r["model"], r["precision"], r["batch_size"], r["threads"], aug, r.get("images_per_s", r.get("error")),
            r.get("vs_base", "-"), r.get("images_per_cpu_s", "-"), r.get("cpu_vs_base", "-"),
            r.get("host_augment_share_pct", "-"),
            f"{r.get('load_before', '-')}->{r.get('load_after', '-')}")) + " |")
    table = "\n".join(lines)
    out = {"created": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "machine": {"cpus": os.cpu_count(),
           "processor": platform.processor() or platform.machine(), "python": platform.python_version()},
           "base": BASE, "steps": args.steps, "warmup": args.warmup,
           "note": "CPU shared with other jobs when load > threads; images/s of model.fit steps incl. host augmentation",
           "rows": rows, "table_md": table}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(out, indent=1) + "\n")
    if len(rows) == len(args.models.split(",")) * len(VARIANTS):
        print(table)
        print(f"load average at the end: {os.getloadavg()}; written {args.out}")


if __name__ == "__main__":
    sys.exit(main())

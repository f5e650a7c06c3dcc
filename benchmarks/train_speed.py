"""Training throughput: images/s of real `fer-train fit` training steps, one setting changed at a time.

Each setting runs in its own process (the thread count and the precision policy must be set before
TensorFlow starts): the model from fer_train.models, compiled as `fit` compiles it (AdamW, categorical
cross-entropy, accuracy), fed by fer_train.augment.TrainBatches (the host-side augmentation of fit),
`model.fit` for a few warm-up steps (tracing), then `--steps` timed steps. images/s is the steady
state: batch size x steps over the time from the start of the first timed step to the end of the last
(a callback stamps them), so fit's start-up and tear-down do not count. Faces: Training rows of
../shared/data/fer2013.npz when present, else random pixels (speed does not depend on content).

Rows (per model): `before` is the training step as it was until the fused BatchNorm and the bfloat16
policy came in (float32, Keras' own BatchNorm); `default` is what `fer-train fit` uses now on this
machine (`--precision auto` resolved here, fused BatchNorm); the other rows change one factor of the
default (or of `before`, for the two single-change rows).

The CPU may be shared: every row records the 1-minute load average before and after, and the process
CPU time of the timed steps, so `img/CPU-s` (images per CPU-second, all threads together) compares
settings even when other jobs take wall-clock time from them. Stop other jobs (or `kill -STOP` a
background run) for clean figures.

`--profile` adds, for `before` and `default` of each model, TensorFlow's profiler over 5 steps:
milliseconds per step by op type (what the step spends its time on).

    python benchmarks/train_speed.py --profile        # every setting, table + JSON (about 7 min here)
    python benchmarks/train_speed.py --models edgenet_s --steps 20
Writes benchmarks/results/train_speed.json (and prints the table).
"""
from __future__ import annotations

import argparse
import collections
import glob
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
BEFORE = {"precision": "float32", "fused_bn": False, "batch_size": 128, "threads": 2, "augment": True}


def default_setting(model: str) -> dict:
    """What `fer-train fit --model MODEL` does now on this machine (its --precision auto, fused BatchNorm)."""
    from fer_train.fit import resolve_precision

    return {**BEFORE, "precision": resolve_precision("auto", model)[0], "fused_bn": True}


def variants(default: dict) -> list[tuple[str, dict]]:
    """(row name, setting) pairs: before, the two single changes, the default, one factor of it."""
    return [
        ("before", BEFORE),
        ("before + fused BatchNorm", {**BEFORE, "fused_bn": True}),
        ("before + bfloat16", {**BEFORE, "precision": "mixed_bfloat16"}),
        ("default", default),
        ("default, batch 64", {**default, "batch_size": 64}),
        ("default, batch 256", {**default, "batch_size": 256}),
        ("default, 1 thread", {**default, "threads": 1}),
        ("default, no augmentation", {**default, "augment": False}),
        ("default, runtime-crop augmentation", {**default, "runtime_aug": True}),  # the recipes' variation
        ("default, XLA (jit_compile)", {**default, "jit_compile": True}),
        # the architecture question: depthwise-separable blocks instead of dense 3x3 convs (fewer MACs)
        ("default, depthwise-separable blocks", {**default, "model_opts": {"kind": "sep"}}),
    ]


def measure(setting: dict, profile_dir: str | None = None) -> dict:
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

    M.FUSED_BATCHNORM = bool(setting["fused_bn"])
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
    model = M.build_model(setting["model"], (48, 48), 7, **setting.get("model_opts", {}))
    model.compile(optimizer=keras.optimizers.AdamW(1e-3, weight_decay=1e-4),
                  loss=keras.losses.CategoricalCrossentropy(), metrics=["accuracy"],
                  jit_compile=bool(setting.get("jit_compile", False)))
    model.fit(batches, epochs=1, steps_per_epoch=warm, verbose=0, shuffle=False)  # trace + warm caches

    stamps: list[float] = []

    class Stamp(keras.callbacks.Callback):
        def on_train_batch_begin(self, batch, logs=None):
            if not stamps:
                stamps.append(time.perf_counter())

        def on_train_batch_end(self, batch, logs=None):
            stamps.append(time.perf_counter())

    load0 = os.getloadavg()[0]
    c0 = time.process_time()
    hist = model.fit(batches, epochs=1, steps_per_epoch=steps, verbose=0, shuffle=False, callbacks=[Stamp()])
    cpu = time.process_time() - c0
    dt = stamps[-1] - stamps[0]
    step_ms = np.diff(stamps) * 1000
    # the host side alone: augmenting the same number of batches
    t1 = time.perf_counter()
    for i in range(steps):
        batches[i % len(batches)]
    host = time.perf_counter() - t1
    row = {**setting, "images_per_s": round(bs * steps / dt, 1), "seconds": round(dt, 2),
           "step_ms_median": round(float(np.median(step_ms)), 1),
           "images_per_cpu_s": round(bs * steps / cpu, 1), "cpu_seconds": round(cpu, 2),
           "host_augment_share_pct": round(100 * host / dt, 1), "loss": round(float(hist.history["loss"][-1]), 4),
           "load_before": round(load0, 2), "load_after": round(os.getloadavg()[0], 2), "faces": source,
           "params": M.count_params(model)}
    if profile_dir:
        row["profile_ms_per_step"] = profile_steps(model, batches, profile_dir)
    return row


def profile_steps(model, batches, logdir: str, steps: int = 5) -> dict[str, float]:
    """TensorFlow's profiler over `steps` training steps: ms per step by op type, largest first
    (`step` is the whole executed graph; the op types are inside it)."""
    import tensorflow as tf
    from tensorflow.tsl.profiler.protobuf import xplane_pb2

    tf.profiler.experimental.start(logdir)
    model.fit(batches, epochs=1, steps_per_epoch=steps, verbose=0, shuffle=False)
    tf.profiler.experimental.stop()
    space = xplane_pb2.XSpace()
    space.ParseFromString(Path(glob.glob(f"{logdir}/**/*.xplane.pb", recursive=True)[0]).read_bytes())
    by_type: collections.Counter = collections.Counter()
    for plane in space.planes:
        names = {k: v.name for k, v in plane.event_metadata.items()}
        for line in plane.lines:
            if not line.name.startswith("tf_Compute"):  # the executor thread that runs the step's ops
                continue
            for event in line.events:
                name = names.get(event.metadata_id, "")
                if name == "ExecutorState::Process":
                    by_type["step"] += event.duration_ps / 1e9 / steps
                elif ":" in name:
                    by_type[name.rsplit(":", 1)[1].replace("_MklNative", "")] += event.duration_ps / 1e9 / steps
    step = by_type.pop("step", 0.0)
    top = {k: round(v, 1) for k, v in by_type.most_common(12)}
    return {"step": round(step, 1), **top, "other ops": round(sum(by_type.values()) - sum(top.values()), 1)}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", default="edgenet,edgenet_s")
    ap.add_argument("--steps", type=int, default=30, help="timed training steps per setting")
    ap.add_argument("--warmup", type=int, default=4)
    ap.add_argument("--profile", action="store_true", help="also profile `before` and `default` (op types)")
    ap.add_argument("--only", default=None, help="comma-separated row names to run (default: all)")
    ap.add_argument("--out", default=str(HERE / "results" / "train_speed.json"))
    ap.add_argument("--one", help=argparse.SUPPRESS)  # internal: measure one setting (JSON) in this process
    args = ap.parse_args(argv)
    if args.one:
        setting = json.loads(args.one)
        profile = setting.pop("profile", False)
        with tempfile.TemporaryDirectory() as tmp:
            print("RESULT " + json.dumps(measure(setting, tmp if profile else None)))
        return 0
    only = set(args.only.split(",")) if args.only else None
    settings = [{**s, "row": name, "model": m, "steps": args.steps, "warmup": args.warmup,
                 "profile": args.profile and name in ("before", "default")}
                for m in args.models.split(",") for name, s in variants(default_setting(m)) if not only or name in only]
    default = {m: default_setting(m) for m in args.models.split(",")}
    try:
        from tqdm import tqdm

        progress = tqdm(settings, desc="settings", unit="setting", file=sys.stderr)
    except ImportError:  # pragma: no cover
        progress = settings
    rows = []
    for s in progress:
        proc = subprocess.run([sys.executable, __file__, "--one", json.dumps(s)], capture_output=True, text=True,
                              env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"})
        line = next((ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")), None)
        if line is None:
            rows.append({**s, "error": (proc.stderr.strip().splitlines() or ["no output"])[-1]})
        else:
            rows.append(json.loads(line[len("RESULT "):]))
        write(args, rows, default, final=s is settings[-1])  # after every setting: a killed run keeps its rows
    return 0


def write(args, rows: list[dict], default: dict[str, dict], final: bool) -> None:
    before = {r["model"]: r for r in rows if r["row"] == "before" and "images_per_s" in r}
    for r in rows:
        if "images_per_s" in r and r["model"] in before:
            r["vs_before"] = round(r["images_per_s"] / before[r["model"]]["images_per_s"], 2)
            r["cpu_vs_before"] = round(r["images_per_cpu_s"] / before[r["model"]]["images_per_cpu_s"], 2)
    header = ("model", "setting", "precision", "BN", "batch", "threads", "img/s", "vs before", "step ms",
              "img/CPU-s", "vs before (CPU)", "load")
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for r in rows:
        lines.append("| " + " | ".join(str(v) for v in (
            r["model"], r["row"], r["precision"], "fused" if r["fused_bn"] else "keras", r["batch_size"], r["threads"],
            r.get("images_per_s", r.get("error")), r.get("vs_before", "-"), r.get("step_ms_median", "-"),
            r.get("images_per_cpu_s", "-"), r.get("cpu_vs_before", "-"),
            f"{r.get('load_before', '-')}->{r.get('load_after', '-')}")) + " |")
    table = "\n".join(lines)
    profiles = [f"{r['model']} {r['row']}: " + ", ".join(f"{k} {v}" for k, v in r["profile_ms_per_step"].items())
                for r in rows if "profile_ms_per_step" in r]
    out = {"created": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "machine": {"cpus": os.cpu_count(),
           "processor": platform.processor() or platform.machine(), "python": platform.python_version()},
           "before": BEFORE, "default": default, "steps": args.steps, "warmup": args.warmup,
           "note": "steady-state images/s of model.fit steps incl. host augmentation; CPU shared when load > threads",
           "rows": rows, "table_md": table, "profiles_ms_per_step": profiles}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(out, indent=1) + "\n")
    if final:
        print(table)
        print("\n".join(["", "profile, ms per step by op type:", *profiles]) if profiles else "")
        print(f"load average at the end: {os.getloadavg()}; written {args.out}")


if __name__ == "__main__":
    sys.exit(main())

"""Are the shipped models' scores calibrated? ECE and reliability diagrams on PrivateTest, before/after.

For every model card in models/ with an int8 file: "before" is the model as trained and converted, no
temperature (a file calibrated in place: its softmax's beta set back to 1; a file converted with T
folded into its last Dense: the softmax of its dequantised logits times T), "after" is the shipped file
(see the card's metrics.calibration). Both run through the
runtime's own classifier. Also chooses the default `--min-confidence` on PublicTest with the default
model: the largest score t on a 0.01 grid such that the faces scored just below it (in [t - 0.1, t))
are labelled right less than half the time (an "uncertain" label is more often wrong than right),
and checks it on PrivateTest.

    python benchmarks/calibration.py                          # -> benchmarks/results/calibration.{json,png}
    python benchmarks/calibration.py --data ../shared/data/fer2013.npz --out-dir /tmp/cal

Needs ../shared/data (or --data) and matplotlib for the plot (the JSON is written without it).
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
#: "uncertain" = below this accuracy (the faces scored under the threshold, PublicTest)
UNCERTAIN_MAX_ACCURACY = 0.5


def _cards(models_dir: Path) -> list[tuple[str, Path]]:
    out = []
    for p in sorted(models_dir.glob("*.json")):
        d = json.loads(p.read_text())
        if "labels" in d and "int8" in d.get("files", {}):
            out.append((d["name"], models_dir / d["files"]["int8"]))
    return out


def _split(data: Path, votes: Path | None, labels, name: str):
    from fer_train.data import load_ferplus, load_npz

    ds = load_ferplus(data, votes) if len(labels) == 8 else load_npz(data)
    return ds.split(name)


def measure(model: Path, data: Path, votes: Path | None) -> dict:
    """Before/after figures for one int8 model on PublicTest and PrivateTest (+ the raw arrays)."""
    from fer_convert import calibrate as C
    from fer_convert.tflite_graph import set_softmax_beta, softmax_beta
    from fer_edge.classifier import EmotionClassifier

    clf = EmotionClassifier(model, threads=1)
    in_weights = clf.card.temperature_in_weights(model.name) if clf.card is not None else 1.0
    out: dict = {"model": model.name, "softmax_beta": round(softmax_beta(model), 6), "temperature_in_weights": in_weights,
                 "temperature": round(in_weights / softmax_beta(model), 4), "labels": list(clf.labels)}
    with tempfile.TemporaryDirectory() as tmp:
        raw = set_softmax_beta(model, 1.0, Path(tmp) / model.name)
        raw_clf = EmotionClassifier(raw, threads=1, labels=clf.labels)
        for split in ("public", "private"):
            s = _split(data, votes, clf.labels, split)
            if in_weights != 1.0:  # the trained logits: the file's, times the T folded into its last Dense
                p0 = C.softmax(C.tflite_logits(raw, s.x, labels=clf.labels) * in_weights)
            else:
                p0 = raw_clf.predict_pixels(s.x)
            p1 = clf.predict_pixels(s.x)
            name = "PublicTest" if split == "public" else "PrivateTest"
            out[name] = {"before": C.calibration_summary(p0, s.y), "after": C.calibration_summary(p1, s.y),
                         "reliability_before": C.reliability(p0, s.y), "reliability_after": C.reliability(p1, s.y),
                         "_p": (p0, p1), "_y": s.y}
    return out


def choose_min_confidence(res: dict) -> dict:
    """The default --min-confidence from the default model's calibrated PublicTest scores."""
    from fer_convert import calibrate as C

    p1, y = res["PublicTest"]["_p"][1], res["PublicTest"]["_y"]
    pick = C.uncertain_threshold(p1.max(1), p1.argmax(1) == y, UNCERTAIN_MAX_ACCURACY)
    t = pick["threshold"]
    q1, yq = res["PrivateTest"]["_p"][1], res["PrivateTest"]["_y"]
    below = q1.max(1) < t
    right = q1.argmax(1) == yq
    q0 = res["PrivateTest"]["_p"][0]
    return {"model": res["model"], "rule": f"largest t (0.01 grid) such that PublicTest faces scored in [t - 0.1, t) "
                                           f"are right < {UNCERTAIN_MAX_ACCURACY:.0%} of the time",
            "min_confidence": t, "PublicTest": pick,
            "PrivateTest": {"share_below": round(float(below.mean()), 4),
                            "accuracy_just_below": round(float(right[below & (q1.max(1) >= t - 0.1)].mean()), 4),
                            "accuracy_below": round(float(right[below].mean()), 4) if below.any() else None,
                            "accuracy_above": round(float(right[~below].mean()), 4) if (~below).any() else None},
            "uncalibrated_share_below_same_t_PrivateTest": round(float((q0.max(1) < t).mean()), 4)}


def plot(results: list[dict], path: Path) -> Path | None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib not installed: no plot", file=sys.stderr)
        return None
    fig, axes = plt.subplots(1, len(results), figsize=(4.6 * len(results), 4.6), squeeze=False)
    for ax, r in zip(axes[0], results):
        pri = r["PrivateTest"]
        ax.plot([0, 1], [0, 1], color="0.6", lw=1, ls="--", label="perfect")
        for key, colour, text in (("before", "tab:red", "no temperature"), ("after", "tab:blue", f"T = {r['temperature']:.3f}")):
            bins = [b for b in pri[f"reliability_{key}"] if b["n"] >= 10]
            ax.plot([b["confidence"] for b in bins], [b["accuracy"] for b in bins], "o-", color=colour,
                    label=f"{text}: ECE {pri[key]['ece']:.3f}")
        ax.set(xlim=(0, 1), ylim=(0, 1), xlabel="top score (confidence)", ylabel="accuracy",
               title=f"{r['model']}\nPrivateTest, {pri['after']['n']} faces")
        ax.legend(loc="upper left", fontsize=8)
        ax.grid(alpha=0.3)
    fig.suptitle("Reliability: accuracy per score bin (15 bins, >= 10 faces shown)", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", type=Path, default=REPO.parent / "shared" / "data" / "fer2013.npz")
    ap.add_argument("--votes", type=Path, default=None, help="ferplus_votes.npz (default: beside --data)")
    ap.add_argument("--models-dir", type=Path, default=REPO / "models")
    ap.add_argument("--out-dir", type=Path, default=REPO / "benchmarks" / "results")
    args = ap.parse_args(argv)
    if str(REPO) not in sys.path:
        sys.path.insert(0, str(REPO))
    if not args.data.is_file():
        raise SystemExit(f"no data at {args.data}: pass --data fer2013.npz")
    votes = args.votes or args.data.parent / "ferplus_votes.npz"
    results = []
    for name, model in _cards(args.models_dir):
        r = measure(model, args.data, votes if votes.is_file() else None)
        r["name"] = name
        results.append(r)
        print(f"{name}: T {r['temperature']:.4f}; PrivateTest ECE {r['PrivateTest']['before']['ece']:.4f} -> "
              f"{r['PrivateTest']['after']['ece']:.4f}, top score {r['PrivateTest']['before']['top_score_min']:.3f}.."
              f"{r['PrivateTest']['before']['top_score_max']:.3f} -> {r['PrivateTest']['after']['top_score_min']:.3f}.."
              f"{r['PrivateTest']['after']['top_score_max']:.3f}")
    default = next((r for r in results if r["name"] == "fer_default"), results[0])
    choice = choose_min_confidence(default)
    pub, pri = choice["PublicTest"], choice["PrivateTest"]
    print(f"--min-confidence {choice['min_confidence']}: faces scored in [t-0.1, t) right {pub['accuracy_just_below']:.1%} "
          f"(PublicTest) / {pri['accuracy_just_below']:.1%} (PrivateTest) of the time; below t: {pub['share_below']:.1%} / "
          f"{pri['share_below']:.1%} of faces, right {pub['accuracy_below']:.1%} / {pri['accuracy_below']:.1%}; "
          f"above: right {pub['accuracy_above']:.1%} / {pri['accuracy_above']:.1%}")
    args.out_dir.mkdir(parents=True, exist_ok=True)
    png = plot(results, args.out_dir / "calibration.png")
    for r in results:
        for split in ("PublicTest", "PrivateTest"):
            r[split].pop("_p"), r[split].pop("_y")
    report = {"what": "int8 models, runtime classifier; before = softmax beta 1 (no temperature), after = shipped file",
              "data": str(args.data), "ece_bins": 15, "models": results, "min_confidence": choice,
              "plot": png.name if png else None}
    (args.out_dir / "calibration.json").write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {args.out_dir / 'calibration.json'}" + (f" and {png}" if png else ""))
    return report


if __name__ == "__main__":
    main()

"""The model card (`<base>.json`, fer_edge.contract.ModelCard): created, or updated in place.

An update keeps what the card already says (other variants, other splits' metrics) and replaces
what this conversion measured. Metrics layout:

    "metrics": {
      "float":      {"PublicTest": {"top1": 62.1, "n": 3589}},
      "int8":       {"PublicTest": {"top1": 61.9, "n": 3589, "agreement_pct": 98.7, "drop_pp": 0.2, ...}},
                    (FER+ models: float and variants also "top1_ferplus_majority", "n_ferplus_majority":
                    top-1 on Microsoft's majority protocol; "top1"/"n" are every face with an emotion plurality)
      "gate":       {"int8": {"PublicTest": {"passed": true, "report": "x_int8_gate.json", ...}}},
      "latency_ms": {"int8": {"median_ms": 0.31, "threads": 1, "invokes": 200, ...}},
      "edgetpu":    {...}
    }
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Callable, Sequence

from fer_edge import contract
from fer_edge.errors import ContractError


def load_existing(path: Path, say: Callable[[str], None] | None = None) -> contract.ModelCard | None:
    """The card already at `path`, or None; a broken card is reported and replaced, not trusted."""
    if not path.exists():
        return None
    try:
        return contract.ModelCard.load(path)
    except ContractError as exc:
        if say:
            say(f"warning: existing card {path} is unusable ({exc}); writing a new one")
        return None


def _merge(dst: dict, src: dict) -> dict:
    for k, v in src.items():
        if isinstance(v, dict) and isinstance(dst.get(k), dict):
            _merge(dst[k], v)
        else:
            dst[k] = v
    return dst


def ferplus_majority_entry(top1: float, n: int) -> dict[str, Any]:
    """The card keys of a FER+ accuracy on Microsoft's majority protocol, beside a split's plurality `top1`/`n`."""
    return {"top1_ferplus_majority": top1, "n_ferplus_majority": int(n)}


def update_card(path: Path, *, existing: contract.ModelCard | None, base: str, labels: Sequence[str],
                input_size: Sequence[int], architecture: str, params: int, results: dict,
                keras_path: Path, training: dict[str, Any], data: dict[str, Any],
                edgetpu: dict[str, Any] | None, gate_enabled: bool) -> contract.ModelCard:
    """Write `<base>.json` next to the variants; returns the card written."""
    card = existing or contract.ModelCard(name=base)
    card.name = base
    card.labels = list(labels)
    card.input_size = [int(input_size[0]), int(input_size[1])]
    card.architecture = architecture
    card.params = int(params)
    card_dir = path.parent
    card.files["keras"] = os.path.relpath(keras_path, card_dir)
    card.sizes[card.files["keras"]] = keras_path.stat().st_size
    metrics: dict[str, Any] = {}
    for variant, res in results.items():
        final_name = f"{base}_{variant}.tflite"
        if res.status == "rejected":
            # the card never points at a file that failed its gate
            if card.files.get(variant) == final_name and not (card_dir / final_name).exists():
                card.files.pop(variant, None)
        else:
            card.files[variant] = res.path.name
            card.sizes[res.path.name] = res.size
            if res.macs:
                card.macs = res.macs
        if res.gate is not None:
            g, m = res.gate, res.gate["metrics"]
            split = g["split"]
            metrics.setdefault("float", {})[split] = {"top1": m["top1_float"], "n": m["n"]}
            fm = m.get("ferplus_majority")  # FER+: Microsoft's majority protocol next to the plurality figure
            if fm:
                metrics["float"][split].update(ferplus_majority_entry(fm["top1_float"], fm["n"]))
            metrics.setdefault("gate", {}).setdefault(variant, {})[split] = {
                "passed": g["passed"], "reasons": g["reasons"], "thresholds": g["thresholds"],
                "report": g.get("report_json"), "file": g["file"]}
            if g["passed"]:
                metrics.setdefault(variant, {})[split] = {
                    "top1": m["top1_converted"], "n": m["n"], "agreement_pct": m["agreement_pct"],
                    "drop_pp": m["drop_pp"], "mean_abs_dprob": m["mean_abs_dprob"]}
                if fm:
                    metrics[variant][split].update(ferplus_majority_entry(fm["top1_converted"], fm["n"]))
        elif not gate_enabled and res.status != "rejected":
            metrics.setdefault("gate", {})[variant] = {"skipped": True}
        if res.latency:
            metrics.setdefault("latency_ms", {})[variant] = res.latency
    if edgetpu is not None:
        comp = edgetpu.get("compiler") or {}
        metrics["edgetpu"] = {"check_ok": edgetpu.get("ok"), "all_ops_supported": edgetpu.get("all_ops_supported"),
                              "compiler": {k: comp.get(k) for k in ("available", "version", "ops_on_tpu", "ops_on_cpu")
                                           if k in comp}}
        tpu_file = (comp.get("files") or {}).get("tflite")
        if tpu_file:
            card.files["edgetpu"] = tpu_file
            card.sizes[tpu_file] = (card_dir / tpu_file).stat().st_size
    card.metrics = _merge(card.metrics or {}, metrics)
    if training:
        card.training = dict(training)
    if data:
        card.data = {k: data[k] for k in data}
    card.notes = ("Converted by fer-convert; a variant that failed its gate is kept only as <file>.rejected "
                  "and is not listed in `files`.")
    card.save(path)
    return card

"""README's Measured table quotes the shipped models' cards and calibration.json, never older figures.

Each ship rewrites the cards and re-runs benchmarks/calibration.py; the README is typed by hand, so this
reads the figures back out of it. A ship that leaves the README quoting the model it replaced fails here.
"""
from __future__ import annotations

import json
from decimal import ROUND_HALF_UP, Decimal
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


def measured_rows() -> dict[str, str]:
    """The Measured table's rows, keyed by the text of their first cell."""
    text = (REPO / "README.md").read_text()
    section = text.split("\n## Measured", 1)[1].split("\n## ", 1)[0]
    rows = {}
    for line in section.splitlines():
        if line.startswith("| ") and not line.startswith("| what") and not line.startswith("|---"):
            first, rest = line[2:].split(" | ", 1)
            rows[first] = rest
    return rows


def row_starting(prefix: str) -> str:
    rows = measured_rows()
    matches = [rest for first, rest in rows.items() if first.startswith(prefix)]
    assert len(matches) == 1, f"README's Measured table should have one row starting {prefix!r}, has {len(matches)}"
    return matches[0]


def rounded(value: float, places: int) -> str:
    """As a person types a stored figure: half up on its decimal text (0.0595 -> 0.060, not float's 0.059)."""
    return str(Decimal(str(value)).quantize(Decimal(1).scaleb(-places), rounding=ROUND_HALF_UP))


def card(name: str) -> dict:
    return json.loads((REPO / "models" / f"{name}.json").read_text())["metrics"]


@pytest.mark.parametrize("name, prefix", [("fer_default", "shipped default"), ("fer_fast", "fast tier")])
def test_fer2013_rows_quote_the_shipped_cards(name, prefix):
    row, m = row_starting(prefix), card(name)
    int8, flt, tta = (m[k]["PrivateTest"]["top1"] for k in ("int8", "float", "float_tta"))
    assert f"{rounded(int8, 2)} %" in row, f"{name}: int8 PrivateTest {rounded(int8, 2)} % not in README row: {row[:200]}"
    assert f"float {rounded(flt, 2)} %" in row, f"{name}: float PrivateTest {rounded(flt, 2)} % not in README row"
    assert f"TTA {rounded(tta, 2)} %" in row, f"{name}: TTA PrivateTest {rounded(tta, 2)} % not in README row"


def test_ferplus_row_quotes_the_shipped_card():
    row, m = row_starting("FER+ model"), card("fer_ferplus")
    majority = m["int8"]["PrivateTest"]["top1_ferplus_majority"]
    n = m["int8"]["PrivateTest"]["n_ferplus_majority"]
    plurality = m["int8"]["PrivateTest"]["top1"]
    assert f"{rounded(majority, 2)} %" in row and f"{n:,} faces" in row
    assert f"{rounded(plurality, 2)} %" in row


def test_calibration_row_quotes_calibration_json_and_the_cards():
    row = row_starting("calibration of the shipped")
    results = json.loads((REPO / "benchmarks" / "results" / "calibration.json").read_text())
    shown = {"fer_default_int8.tflite": "default", "fer_fast_int8.tflite": "fast", "fer_ferplus_int8.tflite": "FER+"}
    assert {m["model"] for m in results["models"]} == set(shown)
    for m in results["models"]:
        before, after = m["PrivateTest"]["before"]["ece"], m["PrivateTest"]["after"]["ece"]
        expected = f"{shown[m['model']]} {rounded(before, 3)} → {rounded(after, 3)} (T {rounded(m['temperature'], 3)})"
        assert expected in row, f"README's calibration row lacks {expected!r}: re-run benchmarks/calibration.py?"
        # calibration.json must itself be from the shipped files: the temperature each card carries
        card_t = card(m["model"].removesuffix("_int8.tflite"))["calibration"]["temperature"]
        assert m["temperature"] == pytest.approx(card_t, abs=5e-4), (
            f"{m['model']}: calibration.json has T {m['temperature']}, the card {card_t}: re-run benchmarks/calibration.py")


def test_mirror_averaging_table_quotes_flip_average_json_of_the_shipped_models():
    text = (REPO / "README.md").read_text()
    results = json.loads((REPO / "benchmarks" / "results" / "flip_average.json").read_text())
    for name, m in results["models"].items():
        rows = [line for line in text.splitlines() if line.startswith(f"| `{name}` | ")]
        assert len(rows) == 1, f"README's mirror-averaging table should have one row for {name}"
        plain, averaged = m["plain"], m["mirror_averaged"]
        crops = f"{rounded(plain['crops']['top1_pct'], 2)} → **{rounded(averaged['crops']['top1_pct'], 2)} %**"
        pipeline = f"{rounded(plain['pipeline']['end_to_end_pct'], 2)} → {rounded(averaged['pipeline']['end_to_end_pct'], 2)} %"
        assert crops in rows[0] and pipeline in rows[0], f"{name}: README row {rows[0][:120]} does not quote flip_average.json"
        # measured with the shipped file: its plain top-1 on PublicTest is the card's int8 figure
        assert plain["crops"]["top1_pct"] == pytest.approx(card(name)["int8"]["PublicTest"]["top1"], abs=0.006), (
            f"flip_average.json's {name} is not the shipped model: re-run benchmarks/flip_average.py")

"""The upload page's "Session log" view: upload event logs, see the emotion timeline report.

The same code as `fer-edge report` (edge/report.py) reads the logs and draws the charts, so the page
and the command show the same figures: the summary table, the share of each label per track, and
per track the smoothed probabilities over time, the label band and the share of each label. The
whole page (index.html, self-contained) downloads with one button.

Uploaded files keep their names in a temporary folder for the time of one run of the page, so a
rotated set uploaded together (events.jsonl, events.jsonl.1, ...) is read in order, oldest first.
"""
from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any, Sequence

from .errors import FerError

PAGE_NAME = "Session log"


def report_from_uploads(files: Sequence[tuple[str, bytes]], workdir: str | Path) -> dict[str, Any]:
    """(name, bytes) uploads -> build_report's result, written under `workdir` (logs/ and report/)."""
    from .report import build_report

    logs = Path(workdir) / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    paths = []
    for name, data in files:
        safe = Path(name).name or "events.jsonl"
        path = logs / safe
        path.write_bytes(data)
        paths.append(path)
    return build_report(paths, Path(workdir) / "report", title="Emotion timeline: " + ", ".join(
        Path(n).name for n, _ in files[:3]) + (" ..." if len(files) > 3 else ""))


def report_page() -> None:  # pragma: no cover - exercised through the browser test
    """The Streamlit body of the "Session log" view."""
    import pandas as pd
    import streamlit as st

    st.title("fer-edge: emotion timeline of a session")
    st.caption("Upload the event log a fer-edge run wrote (events.jsonl or events.csv; a rotated set "
               "events.jsonl, events.jsonl.1, ... together). Nothing leaves this machine.")
    uploads = st.file_uploader("Event logs (JSONL or CSV)", accept_multiple_files=True, key="log_uploads")
    if not uploads:
        st.info("Upload an event log to see how each person's emotions moved over the session. "
                "The same report comes from `fer-edge report events.jsonl --out report/`.")
        return
    with tempfile.TemporaryDirectory(prefix="fer-edge-report-") as tmp:
        try:
            result = report_from_uploads([(f.name, f.getvalue()) for f in uploads], tmp)
        except FerError as exc:
            st.error(str(exc))
            return
        session = result["session"]
        st.write(f"{len(result['rows'])} track(s), {session.events} events"
                 + (f"; {session.skipped} unreadable lines skipped" if session.skipped else "")
                 + (f"; {session.duplicates} duplicate events counted once" if session.duplicates else ""))
        shown = session.shown_labels()
        table = [{"track": r["track"], "first seen": r["first_seen"], "duration (s)": r["duration_s"],
                  "events": r["events"], "dominant": r["dominant"], "changes/min": r["changes_per_min"],
                  **{f"{k} %": r["share"].get(k, 0.0) for k in shown}} for r in result["rows"]]
        st.subheader("Summary")
        st.dataframe(pd.DataFrame(table), hide_index=True, key="report_summary")
        st.image(result["overview"].read_bytes(), caption="Share of each label per track")
        for row in result["rows"]:
            st.subheader(f"Track {row['track']}")
            st.image(result["tracks"][row["track"]].read_bytes(),
                     caption=f"track {row['track']}: smoothed probabilities, label band, share of each label")
        st.download_button("Download the report (HTML)", result["html"].read_bytes(), file_name="emotion_report.html",
                           mime="text/html", key="report_html", on_click="ignore")
        st.download_button("Download the summary (CSV)", result["summary_csv"].read_bytes(),
                           file_name="emotion_summary.csv", mime="text/csv", key="report_csv", on_click="ignore")

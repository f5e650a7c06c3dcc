"""A real browser on the real server: `fer-edge app` as a subprocess, Debian's Chromium driven by
Playwright uploads the astronaut photo through the page's file input, and the rendered results
table, the per-face emotion text and the CSV download are read back.

Needs Debian's `chromium` package (/usr/bin/chromium, or $FER_EDGE_CHROMIUM); skipped with the
reason when it is missing. Playwright's own browser download is never used. The screenshot goes to
$FER_EDGE_SCREENSHOT_DIR when set (CI artefacts), else to the test's tmp folder.
"""
from __future__ import annotations

import csv
import io
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import cv2
import pytest

pytest.importorskip("streamlit", reason="the app extra (streamlit) is not installed")
pytest.importorskip("pandas", reason="the app extra (pandas) is not installed")

CHROMIUM = Path(os.environ.get("FER_EDGE_CHROMIUM", "/usr/bin/chromium"))
CHROMIUM_ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]
LABELS = ["angry", "disgust", "fear", "happy", "sad", "surprise", "neutral"]

pytestmark = [
    pytest.mark.slow,
    pytest.mark.timeout(300),
    pytest.mark.skipif(not CHROMIUM.is_file(), reason=f"no browser at {CHROMIUM} (apt-get install chromium)"),
]


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def fer_edge_command() -> list[str]:
    """The installed `fer-edge` script next to this Python, else the same CLI through `python -c`."""
    script = shutil.which("fer-edge", path=str(Path(sys.executable).parent))
    if script:
        return [script]
    return [sys.executable, "-c", "from fer_edge.cli import main; main()"]


def wait_healthy(url: str, proc: subprocess.Popen, log: Path, timeout: float = 90.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"fer-edge app exited with {proc.returncode}:\n{log.read_text()}")
        try:
            with urllib.request.urlopen(url + "/_stcore/health", timeout=2) as resp:
                if resp.read().strip() == b"ok":
                    return
        except OSError:
            pass
        time.sleep(0.3)
    pytest.fail(f"fer-edge app not healthy after {timeout:.0f} s:\n{log.read_text()}")


@pytest.fixture
def app_server(tmp_path, tiny_tflite_model):
    """`fer-edge app --port <free> --model <tiny>` on localhost; stopped (SIGTERM) afterwards."""
    port = free_port()
    empty = tmp_path / "no_models"
    empty.mkdir()
    log = tmp_path / "server.log"
    env = dict(os.environ, STREAMLIT_BROWSER_GATHER_USAGE_STATS="false", STREAMLIT_SERVER_HEADLESS="true",
               HOME=str(tmp_path))  # Streamlit's ~/.streamlit stays inside the test
    # but matplotlib keeps the user's font cache: building it afresh inside a new HOME took the first
    # report render past the session-log test's timeout on a loaded 2-core machine
    env.setdefault("MPLCONFIGDIR", str(Path.home() / ".cache" / "matplotlib"))
    cmd = fer_edge_command() + ["app", "--port", str(port), "--model", str(tiny_tflite_model),
                                "--models-dir", str(empty)]
    with open(log, "wb") as out:
        proc = subprocess.Popen(cmd, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_healthy(url, proc, log)
        yield url
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)  # fer-edge passes it on to Streamlit
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout=10)
        try:  # nothing of the session we started may outlive the test
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def screenshot_dir(tmp_path: Path) -> Path:
    folder = Path(os.environ.get("FER_EDGE_SCREENSHOT_DIR") or tmp_path)
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def test_browser_upload_shows_the_face_and_its_emotion(app_server, tmp_path, astronaut_bgr, astronaut_face_box):
    sync_api = pytest.importorskip("playwright.sync_api", reason="playwright (dev extra) is not installed")
    image = tmp_path / "astronaut.png"
    cv2.imwrite(str(image), astronaut_bgr)
    shot = screenshot_dir(tmp_path) / "app_astronaut.png"

    t0 = time.monotonic()
    with sync_api.sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1250}, accept_downloads=True)
            page.goto(app_server, wait_until="domcontentloaded")
            uploader = page.locator('[data-testid="stFileUploader"] input[type="file"]')
            uploader.wait_for(state="attached", timeout=60_000)
            page.get_by_text("angry, disgust, fear, happy, sad, surprise, neutral").wait_for(timeout=30_000)
            uploader.set_input_files(str(image))

            # the per-face emotion text, e.g. "Face 1: neutral (18%)"
            face_text = page.locator('[data-testid="stMarkdownContainer"] p', has_text="Face 1:").first
            face_text.wait_for(timeout=120_000)
            text = face_text.inner_text()
            assert any(f"Face 1: {label} (" in text for label in LABELS), text

            # the rendered results table (the data grid's accessible cells)
            grid = page.locator('[data-testid="stDataFrame"]')
            grid.wait_for(timeout=30_000)
            cells = grid.locator('[role="gridcell"]')
            cells.first.wait_for(state="attached", timeout=30_000)  # the grid draws on a canvas;
            # its accessible (hidden) table carries the same cell texts
            row = cells.all_inner_texts()[:8]
            assert row[0] == "astronaut.png" and row[1] == "1", row
            x, y, w, h = (int(v) for v in row[2:6])
            fx, fy, fw, fh = astronaut_face_box
            assert fx <= x + w / 2 <= fx + fw and fy <= y + h / 2 <= fy + fh, row
            assert row[6] in LABELS and row[6] in text

            # the annotated image is there, then the CSV download carries the same row
            page.locator('[data-testid="stImage"] img').first.wait_for(timeout=30_000)
            with page.expect_download(timeout=30_000) as download:
                page.get_by_role("button", name="Download results (CSV)").click()
            rows = list(csv.DictReader(io.StringIO(Path(download.value.path()).read_text())))
            assert download.value.suggested_filename == "fer_edge_results.csv"
            assert rows and rows[0]["image"] == "astronaut.png" and rows[0]["emotion"] == row[6]
            assert abs(sum(float(rows[0][f"p_{label}"]) for label in LABELS) - 1.0) < 0.01

            # the whole page from the top (Streamlit scrolls inside its own container, not the document)
            page.mouse.move(0, 0)
            page.evaluate("document.querySelectorAll('*').forEach(e => { if (e.scrollTop) e.scrollTop = 0; })")
            page.wait_for_timeout(300)
            page.screenshot(path=str(shot), full_page=True)
        finally:
            browser.close()
    assert shot.is_file() and shot.stat().st_size > 10_000
    print(f"\nbrowser upload round trip {time.monotonic() - t0:.1f} s; screenshot: {shot}")


# --------------------------------------------------------------------------- the emotion timeline report
REPORT_SCREENSHOT = Path(__file__).resolve().parents[2] / "docs" / "report_screenshot.png"


def _report(tmp_path: Path):
    """A session logged by the runtime's own JSONL sink (see tests/edge/test_report.py), reported."""
    from fer_edge.report import build_report
    from tests.edge.test_report import write_logs

    logs = tmp_path / "logs"
    logs.mkdir()
    write_logs(logs, max_bytes=5000, kinds=("jsonl",))
    return logs, build_report([logs / "events.jsonl"], tmp_path / "report", title="Session report")


def test_browser_renders_the_report_page_with_its_charts(tmp_path):
    """fer-edge report's index.html opened from disk in Chromium: every chart decodes and is drawn,
    the summary table has one row per track; nothing is fetched from anywhere."""
    sync_api = pytest.importorskip("playwright.sync_api", reason="playwright (dev extra) is not installed")
    pytest.importorskip("matplotlib", reason="the report extra (matplotlib) is not installed")
    _, result = _report(tmp_path)
    shot = screenshot_dir(tmp_path) / "report.png"
    with sync_api.sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 900})
            requests = []
            page.on("request", lambda r: requests.append(r.url))
            page.goto(result["html"].as_uri(), wait_until="load")
            assert page.title() == "Session report"
            images = page.locator("img")
            assert images.count() == 3  # the overview and one timeline per track
            sizes = page.evaluate("Array.from(document.images).map(i => [i.complete, i.naturalWidth, i.naturalHeight,"
                                  " i.getBoundingClientRect().width])")
            assert all(done and w > 400 and h > 100 and shown > 400 for done, w, h, shown in sizes), sizes
            rows = page.locator("#summary tbody tr")
            assert rows.count() == 2
            first = rows.nth(0).locator("td").all_inner_texts()
            assert first[0] == "1" and first[4] == "120" and first[5] == "happy", first
            assert page.locator("section.track h2").all_inner_texts() == ["Track 1", "Track 2"]
            assert all(u.startswith(("file:", "data:")) for u in requests), requests
            page.screenshot(path=str(shot), full_page=True)
        finally:
            browser.close()
    assert shot.is_file() and shot.stat().st_size > 20_000


def _wait_idle(page, timeout_ms: int = 60_000) -> None:
    """Until Streamlit has finished running the script (its running icon gone): a file set on the
    uploader while the page switch is still rerunning can be dropped by the rerun."""
    page.wait_for_timeout(500)  # the icon appears a moment after the rerun starts
    page.locator('[data-testid="stStatusWidgetRunningIcon"]').wait_for(state="hidden", timeout=timeout_ms)


def _page_state(page, tmp_path: Path) -> str:
    """What a failure shows: the page's visible text, the app server's log tail and a screenshot."""
    shot = screenshot_dir(tmp_path) / "app_failure.png"
    try:
        page.screenshot(path=str(shot), full_page=True)
        text = page.locator("body").inner_text(timeout=5_000)
    except Exception as exc:  # noqa: BLE001 - a diagnostic must not hide the failure it explains
        text = f"(page not readable: {exc})"
    log = tmp_path / "server.log"
    tail = log.read_text(errors="replace")[-4000:] if log.is_file() else "(no server log)"
    return f"page text:\n{text[-3000:]}\n--- server log tail:\n{tail}\n--- screenshot: {shot}"


def test_browser_session_log_page_shows_the_same_charts(app_server, tmp_path):
    """The app's "Session log" view: upload a rotated JSONL set, see the summary and every chart."""
    sync_api = pytest.importorskip("playwright.sync_api", reason="playwright (dev extra) is not installed")
    pytest.importorskip("matplotlib", reason="the report extra (matplotlib) is not installed")
    logs, _ = _report(tmp_path)
    files = sorted(str(p) for p in logs.iterdir())
    assert len(files) > 1  # a rotated set, uploaded together
    with sync_api.sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1250})
            page.goto(app_server, wait_until="domcontentloaded")
            page.get_by_text("Session log").click(timeout=60_000)
            page.get_by_text("emotion timeline of a session").wait_for(timeout=30_000)
            _wait_idle(page)
            uploader = page.locator('[data-testid="stFileUploader"] input[type="file"]')
            uploader.wait_for(state="attached", timeout=30_000)
            uploader.set_input_files(files)
            try:  # every file listed under the uploader, then the report's summary line
                page.locator('[data-testid="stFileChipName"]').nth(len(files) - 1).wait_for(timeout=60_000)
                summary = page.get_by_text("track(s), ").first
                summary.wait_for(timeout=120_000)
            except sync_api.TimeoutError:
                pytest.fail("the session-log page did not show the report:\n" + _page_state(page, tmp_path))
            assert page.locator('[data-testid="stFileChipIconError"]').count() == 0, _page_state(page, tmp_path)
            assert "2 track(s), 170 events" in summary.inner_text(), _page_state(page, tmp_path)
            imgs = page.locator('[data-testid="stImage"] img')
            imgs.nth(2).wait_for(timeout=30_000)
            assert imgs.count() == 3
            page.locator('[data-testid="stDataFrame"]').wait_for(timeout=30_000)
            download = page.get_by_role("button", name="Download the report (HTML)")
            download.first.wait_for(timeout=30_000)  # Streamlit renders it after the charts: count() does not wait
            assert download.count() == 1
        finally:
            browser.close()

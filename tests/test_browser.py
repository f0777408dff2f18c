"""End to end in a real browser: `streamlit run app.py`, Debian's chromium driven by Playwright."""
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request

import pytest

from tests.conftest import ROOT

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-sync",
                 "--disable-background-networking", "--disable-component-update", "--disable-dev-shm-usage"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    port = _free_port()
    log = tmp_path_factory.mktemp("server") / "streamlit.log"
    env = {**os.environ, "QMOE_CACHE": str(tmp_path_factory.mktemp("cache"))}  # cold embedding cache
    with open(log, "w") as out:
        proc = subprocess.Popen([sys.executable, "-m", "streamlit", "run", "app.py", "--server.port", str(port),
                                 "--server.address", "127.0.0.1", "--server.headless", "true"],
                                cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        for _ in range(120):
            try:
                if urllib.request.urlopen(f"{url}/_stcore/health", timeout=2).status == 200:
                    break
            except OSError:
                time.sleep(0.5)
        else:
            pytest.fail(f"streamlit did not start: {log.read_text()[-2000:]}")
        yield url
    finally:
        proc.terminate()
        proc.wait(timeout=20)


@pytest.fixture(scope="module")
def browser():
    from playwright.sync_api import sync_playwright

    if not os.path.exists(CHROMIUM):
        pytest.fail("Debian's chromium is required (apt-get install chromium); .ci/run installs it")
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        yield b
        b.close()


def test_upload_a_fold4_flac_and_get_a_prediction(server, browser, shared_esc50, tmp_path):
    clip = shared_esc50 / "audio" / "4-119647-A-48.flac"  # fireworks (exterior/urban); not an example clip
    page = browser.new_page(viewport={"width": 1400, "height": 1800})
    page.goto(f"{server}/Classify", wait_until="networkidle")
    page.get_by_text("Upload a file").click()
    page.locator("input[type=file]").set_input_files(str(clip))
    page.get_by_text("Prediction:").wait_for(timeout=120_000)
    body = page.inner_text("body")
    predicted = body.split("Prediction:")[1].split("(")[0].strip()
    assert predicted in {"animals", "natural_soundscapes", "human_non_speech", "interior_domestic", "exterior_urban"}
    page.locator(".js-plotly-plot").first.wait_for(timeout=60_000)  # the top-5 chart is drawn
    shot = tmp_path / "classify.png"
    page.screenshot(path=str(shot), full_page=True)
    assert shot.stat().st_size > 10_000
    print(f"predicted {predicted!r}; screenshot {shot}")


def test_overview_page_serves_the_results_table(server, browser, tmp_path):
    page = browser.new_page()
    page.goto(server, wait_until="networkidle")
    page.get_by_text("Cached results").wait_for(timeout=60_000)
    page.screenshot(path=str(tmp_path / "overview.png"), full_page=True)

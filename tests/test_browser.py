"""End to end in a real browser: `streamlit run app.py`, Debian's chromium driven by Playwright."""
import contextlib
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
SCRIPT_DONE = ("() => document.querySelector('.stApp')?.getAttribute('data-test-script-state') === 'notRunning'"
               " && !document.querySelector('[data-testid=\"stSkeleton\"]')")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def streamlit_server(workdir, **env):
    """`streamlit run app.py` on a free port with `env` added (e.g. QMOE_RESULTS: its own store); yields its URL,
    stops it after (killed if it does not stop in 20 s: a script thread still busy)."""
    port = _free_port()
    log = workdir / "streamlit.log"
    env = {**os.environ, "QMOE_CACHE": str(workdir / "cache"), **env}  # cold embedding cache
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
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=20)


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    with streamlit_server(tmp_path_factory.mktemp("server")) as url:
        yield url


@pytest.fixture(scope="module")
def browser():
    from playwright.sync_api import sync_playwright

    if not os.path.exists(CHROMIUM):
        pytest.fail("Debian's chromium is required (apt-get install chromium); .ci/run installs it")
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        yield b
        b.close()


def test_a_fresh_servers_first_visitor_on_a_page_url_gets_the_apps_navigation(browser, tmp_path):
    """Streamlit runs a page URL's script alone until app.py has run once (pages/ beside it): the page must
    reroute itself through app.py, so the very first visitor sees the Overview entry, not "app"."""
    with streamlit_server(tmp_path) as url:
        page = browser.new_page(viewport={"width": 1400, "height": 1200})
        page.goto(f"{url}/Bit-width", wait_until="networkidle")
        page.get_by_role("heading", name="Bit-width sweep").wait_for(timeout=120_000)
        page.wait_for_function(SCRIPT_DONE, timeout=120_000)
        nav = page.locator("[data-testid='stSidebarNav']").inner_text()
        assert "Overview" in nav and "app" not in nav.split(), nav
        page.close()


MAJOR = {"animals", "natural_soundscapes", "human_non_speech", "interior_domestic", "exterior_urban"}


def _upload(browser, server, path):
    page = browser.new_page(viewport={"width": 1400, "height": 2400})
    page.goto(f"{server}/Classify", wait_until="networkidle")
    page.get_by_text("Upload a file").click()
    page.locator("input[type=file]").set_input_files(str(path))
    return page


def test_upload_a_fold4_flac_and_see_prediction_and_expert(server, browser, shared_esc50, tmp_path):
    clip = shared_esc50 / "audio" / "4-119647-A-48.flac"  # fireworks (exterior/urban); not an example clip
    page = _upload(browser, server, clip)  # default model: the shipped MoE-C
    page.get_by_text("Handled by expert:").first.wait_for(timeout=120_000)
    page.locator(".js-plotly-plot").first.wait_for(timeout=60_000)  # the charts are drawn
    body = page.inner_text("body")
    predicted = body.split("Prediction:")[1].split("(")[0].strip()
    expert = body.split("Handled by expert:")[1].split("(")[0].strip()
    assert predicted in MAJOR
    assert expert in {"BitNet-Base", "Q4-Base", "Q8-Base"}
    shot = tmp_path / "classify-moe.png"
    page.screenshot(path=str(shot), full_page=True)
    assert shot.stat().st_size > 10_000
    print(f"predicted {predicted!r} by expert {expert!r}; screenshot {shot}")


def test_a_20s_upload_shows_its_window_timeline(server, browser, shared_esc50, tmp_path):
    """Four real fold-4 clips joined into 20 s at 48 kHz: 7 windows of 5 s every 2.5 s, drawn on a timeline."""
    import librosa
    import numpy as np
    import soundfile as sf

    names = ["4-119647-A-48.flac", "4-102844-A-49.flac", "4-167077-A-20.flac", "4-125070-A-19.flac"]
    y = np.concatenate([sf.read(shared_esc50 / "audio" / n, dtype="float32")[0] for n in names])
    long = tmp_path / "twenty-seconds-48k.wav"
    sf.write(long, librosa.resample(y, orig_sr=44100, target_sr=48000), 48000, subtype="PCM_16")
    page = _upload(browser, server, long)
    page.get_by_text("7 windows of 5 s").wait_for(timeout=180_000)
    page.locator(".js-plotly-plot").first.wait_for(timeout=60_000)
    page.screenshot(path=str(tmp_path / "classify-20s-timeline.png"), full_page=True)


def test_a_bad_upload_shows_the_engine_error_and_the_app_lives_on(server, browser, shared_esc50, tmp_path):
    fake = tmp_path / "not-audio.wav"
    fake.write_text("hello, I am a text file")
    page = _upload(browser, server, fake)
    page.get_by_text("Cannot classify not-audio.wav").wait_for(timeout=60_000)
    page.locator("input[type=file]").set_input_files(str(shared_esc50 / "audio" / "4-102844-A-49.flac"))
    page.get_by_text("Prediction:").wait_for(timeout=120_000)  # the same session still works
    page.screenshot(path=str(tmp_path / "bad-upload-then-good.png"), full_page=True)


def test_two_sessions_at_once_do_not_interfere(server, browser, shared_esc50):
    clips = {"4-102844-A-49.flac": None, "4-167077-A-20.flac": None}
    contexts = [browser.new_context() for _ in clips]  # two independent users
    pages = []
    for ctx, name in zip(contexts, clips):
        page = ctx.new_page()
        page.goto(f"{server}/Classify", wait_until="networkidle")
        page.get_by_text("Upload a file").click()
        pages.append(page)
    for page, name in zip(pages, clips):  # both uploads in flight together
        page.locator("input[type=file]").set_input_files(str(shared_esc50 / "audio" / name))
    for page, name in zip(pages, clips):
        page.get_by_text("Prediction:").wait_for(timeout=120_000)
        clips[name] = page.inner_text("body")
    for name, body in clips.items():
        other = next(n for n in clips if n != name)
        assert name in body and other not in body  # each session shows its own clip only
    for ctx in contexts:
        ctx.close()


def test_routing_explorer_routes_an_uploaded_fold4_clip(server, browser, shared_esc50, tmp_path):
    page = browser.new_page(viewport={"width": 1400, "height": 2400})
    page.goto(f"{server}/Routing_explorer", wait_until="networkidle")
    page.locator("input[type=file]").first.set_input_files(str(shared_esc50 / "audio" / "4-125070-A-19.flac"))
    page.get_by_text("Handled by expert:").first.wait_for(timeout=120_000)
    expert = page.inner_text("body").split("Handled by expert:")[1].split("(")[0].strip()
    assert expert in {"BitNet-Base", "Q4-Base", "Q8-Base"}
    page.screenshot(path=str(tmp_path / "routing-explorer-upload.png"), full_page=True)


PAGES = ["", "Classify", "Routing_explorer", "Alpha_sweep", "Bit-width", "Efficiency", "Significance",
         "Claims_ledger", "Learn", "Run_experiment"]


@pytest.mark.parametrize("path", PAGES)
def test_every_page_is_reachable_and_renders(server, browser, tmp_path, path):
    page = browser.new_page(viewport={"width": 1400, "height": 2000})
    page.goto(f"{server}/{path}", wait_until="networkidle")
    page.locator("h1").first.wait_for(timeout=90_000)
    page.wait_for_function(SCRIPT_DONE, timeout=180_000)  # the page's script run has finished
    page.wait_for_timeout(1000)
    assert page.locator("[data-testid='stException']").count() == 0, page.inner_text("body")[:2000]
    page.screenshot(path=str(tmp_path / f"page-{path or 'overview'}.png"), full_page=True)

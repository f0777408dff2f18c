"""How long each page of the app takes to finish drawing, in a real browser against the real server, in one run.

    python bench/pages.py [--loads 6] [--budget 2.0] [--only Overview,Bit-width] [--file-watcher none]

Starts `streamlit run app.py` on a free port and drives Debian's Chromium with Playwright. Per page: `--loads`
navigations to the page's URL; each is timed from navigation until the script has finished and nothing is loading
(the app's script state is `notRunning`, no spinner or skeleton, no stale element) and the page has stayed so for
250 ms (the time reported is when that quiet spell began). The first load is the cold one (imports, caches) and is
reported apart; the warm median is over the rest.

Prints per page the cold time, the warm median, its ratio to the budget and to a bare Streamlit page (a title and a
paragraph on its own server, measured first in the same way: the yardstick of what the machine gives any page), and
the CPU seconds a warm load costs the server and the browser (medians): on a busy machine the wall times stretch
with the load, the CPU seconds much less, so they say where a page's time goes. The load average is printed at the
start and the end, the worst page last.
"""
from __future__ import annotations

import argparse
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from statistics import median

ROOT = Path(__file__).resolve().parent.parent
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-sync",
                 "--disable-background-networking", "--disable-component-update", "--disable-dev-shm-usage"]
# polled every 20 ms, so it reads no layout (innerText would force one per poll and slow the very page it times)
BUSY = """() => {
  const q = s => document.querySelector(s);
  const app = q('[data-testid="stMain"]') || q('[data-testid="stAppViewContainer"]');
  if (!app || !app.textContent.trim()) return true;
  if (q('.stApp')?.getAttribute('data-test-script-state') !== 'notRunning') return true;  // initial, running, rerun
  return !!(q('[data-testid="stSpinner"]') || q('[data-testid="stSkeleton"]') || q('[data-stale="true"]'));
}"""
BARE = 'import streamlit as st\nst.title("A bare page")\nst.markdown("One paragraph, no data, no chart.")\n'


def page_paths() -> list[tuple[str, str]]:
    """(label, url path) of the Overview and every page under pages/ (Streamlit's URL: the name without number)."""
    out = [("Overview", "/")]
    for p in sorted((ROOT / "pages").glob("*.py")):
        name = p.stem.split("_", 1)[1]
        out.append((name.replace("_", " "), "/" + name))
    return out


def start_server(script: Path, cwd: Path = ROOT, watcher: str | None = None) -> tuple[subprocess.Popen, str]:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen([sys.executable, "-m", "streamlit", "run", str(script), "--server.port", str(port),
                             "--server.address", "127.0.0.1", "--server.headless", "true",
                             *(["--server.fileWatcherType", watcher] if watcher else [])],
                            cwd=cwd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    for _ in range(600):
        try:
            if urllib.request.urlopen(f"{url}/_stcore/health", timeout=2).status == 200:
                return proc, url
        except OSError:
            time.sleep(0.5)
    stop(proc)
    raise SystemExit("streamlit did not start")


def stop(proc: subprocess.Popen) -> None:
    proc.terminate()
    try:
        proc.wait(timeout=20)
    except subprocess.TimeoutExpired:  # a script still running holds it up
        proc.kill()
        proc.wait()


def cpu_seconds(server: subprocess.Popen) -> tuple[float, float]:
    """CPU seconds used so far by the server and by the browser (every Chromium process this bench started)."""
    import psutil

    def used(p) -> float:
        try:
            t = p.cpu_times()
            return t.user + t.system
        except psutil.Error:  # a renderer that just went away
            return 0.0

    me = psutil.Process()
    browser = sum(used(p) for p in me.children(recursive=True) if "chrom" in p.name().lower())
    return used(psutil.Process(server.pid)), browser


def time_load(page, url: str, quiet_s: float = 0.25, timeout_s: float = 300.0) -> float:
    """Seconds from navigation until the page went quiet (and stayed quiet for `quiet_s`)."""
    t0 = time.perf_counter()
    page.goto(url, wait_until="commit")
    quiet_since = None
    while time.perf_counter() - t0 < timeout_s:
        busy = page.evaluate(BUSY)
        now = time.perf_counter()
        if busy:
            quiet_since = None
        elif quiet_since is None:
            quiet_since = now
        elif now - quiet_since >= quiet_s:
            return quiet_since - t0
        time.sleep(0.02)
    raise TimeoutError(f"{url} did not finish within {timeout_s} s")


def measure(page, server: subprocess.Popen, label: str, url: str, loads: int, budget: float,
            bare: float | None = None) -> float:
    """Print one page's line; returns its warm median."""
    runs = []
    for _ in range(loads):
        before = cpu_seconds(server)
        wall = time_load(page, url)
        after = cpu_seconds(server)
        runs.append((wall, after[0] - before[0], after[1] - before[1]))
    warm = median(r[0] for r in runs[1:])
    vs_bare = f"{warm / bare:>8.1f}x" if bare else f"{'':>9}"
    print(f"{label:<22}{runs[0][0]:>8.2f}{warm:>8.2f}{warm / budget:>10.2f}{vs_bare}"
          f"{median(r[1] for r in runs[1:]):>12.2f}{median(r[2] for r in runs[1:]):>13.2f}", flush=True)
    return warm


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--loads", type=int, default=6, help="navigations per page (the first is the cold one)")
    ap.add_argument("--budget", type=float, default=2.0, help="seconds a warm page may take")
    ap.add_argument("--only", default="", help="comma-separated page labels to measure (default: every page)")
    ap.add_argument("--file-watcher", choices=["auto", "none", "poll", "watchdog"],
                    help="override Streamlit's server.fileWatcherType (default: what .streamlit/config.toml says; "
                         "Streamlit's own default, auto, watches the app's folder recursively, .venv included, and "
                         "sets that watch up again for every new session)")
    a = ap.parse_args()
    from playwright.sync_api import sync_playwright

    only = {s.strip() for s in a.only.split(",") if s.strip()}
    pages = [(label, path) for label, path in page_paths() if not only or label in only]
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        print(f"{a.loads} loads per page; load average at start {os.getloadavg()[0]:.1f} ({os.cpu_count()} cores); "
              f"budget {a.budget} s; file watcher {a.file_watcher or 'as configured'}")
        print(f"{'page':<22}{'cold s':>8}{'warm s':>8}{'/ budget':>10}{'/ bare':>9}{'server cpu':>12}"
              f"{'browser cpu':>13}")
        with tempfile.TemporaryDirectory() as tmp:
            (Path(tmp) / "bare.py").write_text(BARE)
            proc, base = start_server(Path(tmp) / "bare.py", cwd=Path(tmp), watcher=a.file_watcher)
            try:
                bare = measure(page, proc, "(bare Streamlit page)", base + "/", a.loads, a.budget)
            finally:
                stop(proc)
        proc, base = start_server(Path("app.py"), watcher=a.file_watcher)
        try:
            warm = {label: measure(page, proc, label, base + path, a.loads, a.budget, bare) for label, path in pages}
        finally:
            stop(proc)
        browser.close()
    worst = max(warm, key=warm.get)
    print(f"load average at end {os.getloadavg()[0]:.1f}")
    print(f"worst page: {worst}, warm median {warm[worst]:.2f} s = {warm[worst] / a.budget:.2f} x the {a.budget} s "
          f"budget ({'within' if warm[worst] <= a.budget else 'OVER'}); {warm[worst] / bare:.1f} x the bare page "
          f"({bare:.2f} s)")


if __name__ == "__main__":
    main()

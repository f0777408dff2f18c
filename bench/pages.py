"""How long each page of the app takes to finish drawing, in a real browser against the real server, in one run.

    python bench/pages.py [--loads 6] [--budget 2.0]

Starts `streamlit run app.py` on a free port and drives Debian's Chromium with Playwright. Per page: `--loads`
navigations to the page's URL; each is timed from navigation until the script has finished and nothing is loading
(no "running" status, no spinner or skeleton, no stale element) and the page has stayed so for 250 ms (the time
reported is when that quiet spell began). The first load is the cold one (imports, caches) and is reported apart;
the warm median is over the rest. Prints per page the cold time, the warm median and its ratio to the budget.
"""
from __future__ import annotations

import argparse
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-sync",
                 "--disable-background-networking", "--disable-component-update", "--disable-dev-shm-usage"]
BUSY = """() => {
  const q = s => document.querySelector(s);
  const app = q('[data-testid="stMain"]') || q('[data-testid="stAppViewContainer"]');
  if (!app || !app.innerText.trim()) return true;
  if (q('[data-testid="stStatusWidget"]') && q('[data-testid="stStatusWidget"]').innerText.match(/Running|Connecting/i)) return true;
  return !!(q('[data-testid="stSpinner"]') || q('[data-testid="stSkeleton"]') || q('[data-stale="true"]'));
}"""


def page_paths() -> list[tuple[str, str]]:
    """(label, url path) of the Overview and every page under pages/ (Streamlit's URL: the name without number)."""
    out = [("Overview", "/")]
    for p in sorted((ROOT / "pages").glob("*.py")):
        name = p.stem.split("_", 1)[1]
        out.append((name.replace("_", " "), "/" + name))
    return out


def start_server() -> tuple[subprocess.Popen, str]:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen([sys.executable, "-m", "streamlit", "run", "app.py", "--server.port", str(port),
                             "--server.address", "127.0.0.1", "--server.headless", "true"],
                            cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    for _ in range(240):
        try:
            if urllib.request.urlopen(f"{url}/_stcore/health", timeout=2).status == 200:
                return proc, url
        except OSError:
            time.sleep(0.5)
    proc.terminate()
    raise SystemExit("streamlit did not start")


def time_load(page, url: str, quiet_s: float = 0.25, timeout_s: float = 120.0) -> float:
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


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--loads", type=int, default=6, help="navigations per page (the first is the cold one)")
    ap.add_argument("--budget", type=float, default=2.0, help="seconds a warm page may take")
    a = ap.parse_args()
    from statistics import median

    from playwright.sync_api import sync_playwright

    proc, base = start_server()
    try:
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            print(f"server {base}; {a.loads} loads per page; load average {os.getloadavg()[0]:.1f}")
            print(f"{'page':<22}{'cold s':>8}{'warm median s':>15}{'/ budget':>10}")
            worst = 0.0
            for label, path in page_paths():
                times = [time_load(page, base + path) for _ in range(a.loads)]
                warm = median(times[1:])
                worst = max(worst, warm)
                print(f"{label:<22}{times[0]:>8.2f}{warm:>15.2f}{warm / a.budget:>10.2f}", flush=True)
            browser.close()
        print(f"slowest warm median {worst:.2f} s: {'within' if worst <= a.budget else 'over'} the {a.budget} s budget")
    finally:
        proc.terminate()
        proc.wait(timeout=20)


if __name__ == "__main__":
    main()

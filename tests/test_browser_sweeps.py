"""Sweeps from the browser, end to end: a real server on its own copy of the result cache, a real background job,
Debian's chromium driven by Playwright."""
import json
import shutil

import numpy as np
import pytest

from tests.conftest import ROOT
from tests.test_browser import SCRIPT_DONE, browser, streamlit_server  # noqa: F401  (fixture)

JOB_S = 600  # a job's runs on a busy 2-core machine


@pytest.fixture(scope="module")
def results_copy(tmp_path_factory):
    """The shipped cache, copied: the sweeps add runs to it, never to the repo's."""
    root = tmp_path_factory.mktemp("sweeps") / "results"
    shutil.copytree(ROOT / "results", root, ignore=shutil.ignore_patterns("run.lock", "job.json", "last_run.json"))
    return root


@pytest.fixture(scope="module")
def server(tmp_path_factory, results_copy):
    with streamlit_server(tmp_path_factory.mktemp("sweep-server"), QMOE_RESULTS=str(results_copy)) as url:
        yield url


def _open(browser, url):  # noqa: F811
    page = browser.new_page(viewport={"width": 1400, "height": 3000})
    page.goto(url, wait_until="networkidle")
    page.locator("h1").first.wait_for(timeout=90_000)
    page.wait_for_function(SCRIPT_DONE, timeout=180_000)
    return page


def _pick(page, scope, label, option):
    """Choose `option` in the multiselect labelled `label` inside `scope`: type it (the menu is virtualized), click
    the exact option, and retry until its tag shows (an expander opening or a rerun can swallow a click)."""
    widget = scope.locator("[data-testid='stMultiSelect']").filter(has_text=label)
    box = widget.locator("input")
    tag = widget.locator(f"[data-tag][aria-label='{option}']")
    for _ in range(5):
        box.click()
        box.fill(str(option))
        try:
            page.get_by_role("option", name=str(option), exact=True).click(timeout=5_000)
            tag.first.wait_for(timeout=5_000)
            break
        except Exception:
            page.keyboard.press("Escape")
    page.keyboard.press("Escape")
    assert tag.count() >= 1, f"could not pick {option} in {label}"


def _traces(page) -> list[dict]:
    """Every plotly trace on the page: name, x, y (as plotly.js drew them: its decoded `_fullData`)."""
    return page.evaluate("""() => Array.from(document.querySelectorAll('.js-plotly-plot')).flatMap(
        g => (g._fullData || []).map(t => ({name: t.name, x: Array.from(t.x || []), y: Array.from(t.y || []),
                                      title: (g.layout.title && g.layout.title.text) || ''})))""")


def _runs(root) -> dict:
    return {p.stem: json.loads(p.read_text()) for p in (root / "runs").glob("*.json")}


def test_a_two_point_alpha_sweep_from_the_alpha_sweep_page_draws_both_points_marked_new(server, browser,  # noqa: F811
                                                                                        results_copy):
    before = set(_runs(results_copy))
    page = _open(browser, f"{server}/Alpha_sweep")
    form = page.locator("[data-testid='stForm']").filter(has_text="alphas (several at once)")
    form.get_by_label("alphas (several at once)").fill("0.15, 0.45")
    _pick(page, form, "Folds (none picked = all)", 1)
    form.get_by_role("button", name="Start the sweep").click()
    page.get_by_text("New points").first.wait_for(timeout=JOB_S * 1000)
    page.get_by_text("Last job").first.wait_for(timeout=60_000)  # the job has ended and the page redrawn
    page.wait_for_function(SCRIPT_DONE, timeout=60_000)
    assert page.locator("[data-testid='stException']").count() == 0, page.inner_text("body")[:2000]

    f1 = [t for t in _traces(page) if "Macro-F1" in t["title"]]
    new = [t for t in f1 if t["name"] == "new: computed by this sweep"]
    assert len(new) == 1 and sorted(new[0]["x"]) == [0.15, 0.45], f1
    drawn = [t for t in f1 if t["name"].startswith("this sweep")]
    assert drawn and sorted(x for t in drawn for x in t["x"]) == [0.15, 0.45]
    assert any(t["name"].startswith("cached grid") and 0.3 in t["x"] for t in f1)  # the grid's points beside them

    added = {k: r for k, r in _runs(results_copy).items() if k not in before}
    assert sorted(r["options"].get("alpha") for r in added.values()) == [0.15, 0.45]
    assert {r["fold"] for r in added.values()} == {1}
    for r, t in zip(sorted(added.values(), key=lambda r: r["options"]["alpha"]),
                    sorted(zip(new[0]["x"], new[0]["y"]))):
        assert np.isclose(r["f1_macro"], t[1])  # the star is the run's F1
    page.close()


def test_cancelling_a_running_sweep_leaves_only_whole_runs(server, browser, results_copy):  # noqa: F811
    from qmoe.experiments import jobs
    from qmoe.experiments.store import ResultStore

    before = set(_runs(results_copy))
    page = _open(browser, f"{server}/Bit-width")
    page.get_by_text("Sweep other bit-widths").click()
    form = page.locator("[data-testid='stForm']").filter(has_text="Bit-widths")
    for k in (7, 9, 10, 11, 12):
        _pick(page, form, "Bit-widths", k)
    form.get_by_role("button", name="Start the sweep").click()
    cancel = page.get_by_role("button", name="Cancel the job")
    cancel.wait_for(timeout=120_000)
    for _ in range(JOB_S):  # let a few runs finish (each whole), then cancel mid-way
        info = jobs.progress(results_copy)
        if info is None or (info.get("new_done") or 0) >= 2:
            break
        page.wait_for_timeout(1000)
    assert info is not None, "the 25-run job ended before it could be cancelled"
    cancel.click()
    page.get_by_text("cancelled").first.wait_for(timeout=120_000)
    assert jobs.current_run(results_copy) is None

    last = jobs.last_run(results_copy)
    assert last["status"] == "cancelled" and last["new"] < 25
    added = set(_runs(results_copy)) - before
    assert len(added) == last["new"] >= 2
    store = ResultStore(results_copy)
    for key in added:  # every record whole: its json, its arrays, nothing half-written beside them
        assert store.get(key)["variant"] in {f"Q{k}-Base" for k in (7, 9, 10, 11, 12)}
        assert len(store.arrays(key)["y_true"]) > 0
    strays = [p.name for p in (results_copy / "runs").iterdir() if p.suffix not in (".json", ".npz")]
    assert not strays
    assert {p.stem for p in (results_copy / "runs").glob("*.npz")} >= added
    page.close()

"""`python -m qmoe reproduce`: killed at any moment it resumes to the same cache; re-timing never changes a result."""
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from qmoe.core.errors import QmoeError
from qmoe.experiments.experiment import RunConfig, run_key
from qmoe.experiments.reproduce import plan, reproduce, retime_one, stages
from qmoe.experiments.store import ResultStore
from tests.conftest import ROOT

CONFIGS = [RunConfig("esc50", "major", "predefined", "FP32-Base", fold) for fold in (1, 2, 3)]
CHILD = """
import sys
from qmoe.experiments.experiment import RunConfig
from qmoe.experiments.reproduce import reproduce
from qmoe.experiments.store import ResultStore
reproduce(ResultStore(sys.argv[1]), workers=1,
          configs=[RunConfig("esc50", "major", "predefined", "FP32-Base", f) for f in (1, 2, 3)])
"""


def _same_results(a: ResultStore, b: ResultStore, keys) -> None:
    for key in keys:
        ra, rb = a.get(key), b.get(key)
        assert ra is not None and rb is not None, key
        assert ra["f1_macro"] == rb["f1_macro"] and ra["best_epoch"] == rb["best_epoch"]
        xa, xb = a.arrays(key), b.arrays(key)
        for name in ("test_idx", "y_true", "y_pred", "probs"):
            np.testing.assert_array_equal(xa[name], xb[name], err_msg=f"{key}: {name}")


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    store = ResultStore(tmp_path_factory.mktemp("whole"))
    assert reproduce(store, workers=1, configs=CONFIGS) == 3
    assert reproduce(store, workers=1, configs=CONFIGS) == 0  # nothing is computed twice
    return store


def test_a_reproduce_killed_midway_resumes_to_the_same_cache(tmp_path, uninterrupted):
    root = tmp_path / "killed"
    child = subprocess.Popen([sys.executable, "-c", CHILD, str(root)], cwd=ROOT, start_new_session=True,
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 300
    while not list((root / "runs").glob("*.json")):  # SIGKILL as soon as the first run lands
        assert child.poll() is None, "the child finished before it could be killed"
        assert time.monotonic() < deadline, "no run landed within 300 s"
        time.sleep(0.05)
    os.killpg(child.pid, signal.SIGKILL)
    child.wait()
    store = ResultStore(root)
    finished = len(store.records())
    assert 1 <= finished < 3  # really killed midway; what is on disk is whole (never a half-written record)
    assert reproduce(store, workers=1, configs=CONFIGS) == 3 - finished  # resumes: finished runs are not redone
    _same_results(store, uninterrupted, [run_key(c) for c in CONFIGS])


def test_retiming_replaces_timings_but_refuses_a_changed_result(tmp_path, uninterrupted):
    import shutil

    root = tmp_path / "copy"
    shutil.copytree(uninterrupted.root, root)
    store, cfg = ResultStore(root), CONFIGS[0]
    key = run_key(cfg)
    before = store.get(key)
    retime_one(cfg, str(root))
    after = store.get(key)
    assert after["created"] >= before["created"] and after["latency_ms_mean"] != before["latency_ms_mean"]
    _same_results(store, uninterrupted, [key])

    arrays = store.arrays(key)  # a cached run that the engine would no longer reproduce is kept, and said
    arrays["y_pred"] = (arrays["y_pred"] + 1) % 5
    store.put(key, {k: v for k, v in after.items() if k not in ("key", "arrays")}, arrays)
    with pytest.raises(QmoeError, match="predicted differently"):
        retime_one(cfg, str(root))
    np.testing.assert_array_equal(store.arrays(key)["y_pred"], arrays["y_pred"])
    with pytest.raises(QmoeError, match="not cached"):
        retime_one(CONFIGS[1], str(tmp_path / "empty"))


def test_the_grid_covers_every_variant_task_and_protocol_without_duplicates():
    from qmoe.experiments.reproduce import MOE, SINGLE

    runs = plan()
    keys = {run_key(c) for _, c in runs}
    assert len(runs) == sum(len(v) for v in stages().values())
    cfgs = [c for _, c in runs]
    for protocol in ("predefined", "paper"):
        done = {(c.variant, c.task) for c in cfgs if c.protocol == protocol and c.seed == 0 and not c.options}
        assert {(v, t) for v in SINGLE for t in ("major", "class")} <= done
        assert {(v, "major") for v in MOE} <= done
    assert {c.seed for c in cfgs} == {0, 1, 2, 3, 4} and len(keys) < len(runs)  # variance stages reuse seed-0 runs
    assert {c.task for _, c in plan(tasks=["class"])} == {"class"}

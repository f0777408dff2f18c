"""Executors: a grid on Ray predicts exactly what it does locally; a worker killed mid-run is retried and every record
is written once, whole; the local default never imports Ray."""
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from qmoe.experiments.executors import (TEST_HOOKS_ENV, LocalExecutor, RunFailed, _reachable, describe, get_executor,
                                        run_configs)
from qmoe.experiments.experiment import RunConfig, run_key
from qmoe.experiments.reproduce import reproduce
from qmoe.experiments.store import ResultStore
from tests.conftest import ROOT

# 2 variants x 2 folds, fast ones
CONFIGS = [RunConfig("esc50", "major", "predefined", v, fold) for v in ("FP32-Base", "Q8-Base") for fold in (1, 2)]


class CountingStore(ResultStore):
    """A store that counts its writes per key."""

    def __init__(self, root):
        super().__init__(root)
        self.puts = {}

    def put(self, key, record, arrays=None):
        self.puts[key] = self.puts.get(key, 0) + 1
        super().put(key, record, arrays)


def _ray_children() -> list:
    import psutil

    return [p for p in psutil.Process().children(recursive=True)
            if any(n in " ".join(p.cmdline()) for n in ("raylet", "gcs_server", "ray::", "default_worker"))]


@pytest.fixture(scope="module")
def hooks(tmp_path_factory):
    """The workers' test-hook folder (see `qmoe.experiments.executors._test_hooks`): set before Ray starts, its workers inherit it."""
    folder = tmp_path_factory.mktemp("hooks")
    os.environ[TEST_HOOKS_ENV] = str(folder)
    yield folder
    os.environ.pop(TEST_HOOKS_ENV, None)


@pytest.fixture(scope="module")
def ray_executor(hooks):
    ex = get_executor("ray", workers=2)
    yield ex
    ex.close()
    import ray

    assert not ray.is_initialized()
    deadline = time.monotonic() + 30
    while _ray_children() and time.monotonic() < deadline:  # Ray's processes exit shortly after shutdown
        time.sleep(0.5)
    assert not _ray_children(), "Ray left processes behind"


@pytest.fixture(scope="module")
def local_store(tmp_path_factory):
    store = CountingStore(tmp_path_factory.mktemp("local"))
    with LocalExecutor(2) as ex:
        records = run_configs(CONFIGS, store, executor=ex, progress=False)
    assert [(r["variant"], r["fold"]) for r in records] == [(c.variant, c.fold) for c in CONFIGS]
    return store


def _same_predictions(a: ResultStore, b: ResultStore) -> None:
    for c in CONFIGS:
        key = run_key(c)
        assert a.get(key)["f1_macro"] == b.get(key)["f1_macro"], describe(c)
        xa, xb = a.arrays(key), b.arrays(key)
        for name in ("test_idx", "y_true", "y_pred", "probs"):
            np.testing.assert_array_equal(xa[name], xb[name], err_msg=f"{describe(c)}: {name}")


def _whole_and_once(store: CountingStore) -> None:
    """Every config's record written exactly once, with its arrays; nothing half-written or quarantined."""
    keys = {run_key(c) for c in CONFIGS}
    assert store.puts == {k: 1 for k in keys}
    assert {p.stem for p in store.runs.glob("*.json")} == keys == {p.stem for p in store.runs.glob("*.npz")}
    assert not list(store.root.rglob(".tmp-*")) and not (store.root / "quarantine").exists()
    for k in keys:
        assert store.get(k)["key"] == k and "y_pred" in store.arrays(k)


def test_the_local_executor_never_imports_ray():
    code = ("import sys; from qmoe.experiments.executors import get_executor; from qmoe.experiments import jobs, reproduce; "
            "get_executor('local').close(); assert 'ray' not in sys.modules, 'ray imported'")
    subprocess.run([sys.executable, "-c", code], cwd=ROOT, check=True)


def test_bad_executor_settings_are_refused():
    from qmoe.core.errors import ConfigError

    with pytest.raises(ConfigError, match="unknown executor"):
        get_executor("dask")
    with pytest.raises(ConfigError, match="--executor ray"):
        get_executor("local", address="head:6379")
    with pytest.raises(ConfigError, match="no Ray cluster answers at '127.0.0.1:1'"):
        _reachable("127.0.0.1:1")  # at once: Ray itself would retry for many minutes


def test_a_grid_on_ray_predicts_exactly_what_it_does_locally(tmp_path, ray_executor, local_store):
    store = CountingStore(tmp_path / "ray")
    seen = []
    records = run_configs(CONFIGS, store, executor=ray_executor, progress=False,
                          on_progress=lambda done, total, cfg: seen.append((done, total)))
    assert [(r["variant"], r["fold"]) for r in records] == [(c.variant, c.fold) for c in CONFIGS]
    assert sorted(seen) == [(1, 4), (2, 4), (3, 4), (4, 4)]
    _whole_and_once(store)
    _whole_and_once(local_store)
    _same_predictions(store, local_store)
    assert run_configs(CONFIGS, store, executor=ray_executor, progress=False) == records  # cached: read back


def test_a_worker_killed_mid_run_is_retried_and_every_record_is_written_once(tmp_path, hooks, ray_executor,
                                                                               local_store):
    (hooks / "starts.log").unlink(missing_ok=True)
    (hooks / "kill").touch()  # the first run to start writes its worker's pid into `victim`
    killed = {}

    def killer():
        deadline = time.monotonic() + 300
        while not (hooks / "victim").exists():
            if time.monotonic() > deadline:
                return
            time.sleep(0.05)
        pid, what = (hooks / "victim").read_text().split("\t")
        time.sleep(1.0)  # well into its training (a run takes ~10 s)
        os.kill(int(pid), signal.SIGKILL)
        killed.update(pid=int(pid), what=what)

    thread = threading.Thread(target=killer, daemon=True)
    thread.start()
    store = CountingStore(tmp_path / "killed")
    try:
        assert reproduce(store, configs=CONFIGS, executor=ray_executor) == len(CONFIGS)
    finally:
        thread.join(timeout=5)
        (hooks / "kill").unlink()
    assert killed, "no worker was killed"
    starts = [line.split("\t") for line in (hooks / "starts.log").read_text().splitlines()]
    assert len(starts) == len(CONFIGS) + 1  # the killed run started twice, the others once
    assert [w for p, w in starts].count(killed["what"]) == 2 and [int(p) for p, _ in starts].count(killed["pid"]) == 1
    _whole_and_once(store)
    _same_predictions(store, local_store)


def test_a_run_that_fails_names_its_config_and_writes_nothing(tmp_path, ray_executor):
    bad = RunConfig("esc50", "major", "predefined", "FP32-Base", 2, options={"no_such_option": 1})
    store = CountingStore(tmp_path / "failing")
    with pytest.raises(RunFailed, match=r"FP32-Base/fold 2/seed 0 options=\{'no_such_option': 1\}"):
        reproduce(store, configs=[bad], executor=ray_executor)
    assert store.puts == {} and not list(store.runs.glob("*"))

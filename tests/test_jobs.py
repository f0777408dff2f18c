"""Background experiment runs: one at a time, progress through the lock, stale locks cleaned."""
import json
import os
import subprocess

import pytest

from qmoe.core.errors import ConfigError, QmoeError
from qmoe.experiments import jobs
from qmoe.experiments.store import ResultStore


def _dead_pid() -> int:
    p = subprocess.Popen(["true"])
    p.wait()
    return p.pid


def test_a_run_caches_its_result_and_a_second_is_refused(tmp_path):
    info = jobs.start({"variants": ["FP32-Base"], "folds": [2]}, tmp_path)
    assert info["pid"] and (tmp_path / jobs.LOCK_NAME).exists()
    with pytest.raises(jobs.RunInProgress, match="already going"):
        jobs.start({"variants": ["Q4-Base"], "folds": [1]}, tmp_path)
    last = jobs.wait(tmp_path, timeout=300)
    assert last["status"] == "done", (tmp_path / "run.log").read_text()[-2000:]
    assert last["runs"] == 1 and not (tmp_path / jobs.LOCK_NAME).exists()
    records = ResultStore(tmp_path).records()
    assert [(r["variant"], r["fold"]) for r in records] == [("FP32-Base", 2)]


def test_a_failing_run_reports_its_error_and_releases_the_lock(tmp_path):
    jobs.start({"variants": ["FP32-Base"], "folds": [9]}, tmp_path)  # ESC-50 has folds 1-5
    last = jobs.wait(tmp_path, timeout=120)
    assert last["status"] == "failed" and "9" in last["message"]
    assert jobs.current_run(tmp_path) is None and not (tmp_path / jobs.LOCK_NAME).exists()


def test_stale_lock_is_cleaned_and_a_live_one_blocks(tmp_path):
    lock = tmp_path / jobs.LOCK_NAME
    lock.write_text(json.dumps({"pid": _dead_pid(), "spec": {"variants": ["Q4-Base"]}}))
    assert jobs.current_run(tmp_path) is None and not lock.exists()
    lock.write_text(json.dumps({"pid": os.getpid(), "spec": {"variants": ["Q4-Base"]}, "done": 1, "total": 5}))
    assert jobs.current_run(tmp_path)["pid"] == os.getpid()
    with pytest.raises(jobs.RunInProgress, match=rf"pid {os.getpid()}.*Q4-Base \(1/5 runs done\)"):
        jobs.start({"variants": ["FP32-Base"], "folds": [1]}, tmp_path)
    assert json.loads(lock.read_text())["pid"] == os.getpid()  # the holder's lock is untouched


def test_bad_specs_are_refused_before_anything_starts(tmp_path):
    with pytest.raises(ConfigError, match="unknown variant"):
        jobs.start({"variants": ["Q3-Bass"]}, tmp_path)
    with pytest.raises(QmoeError, match="at least one"):
        jobs.start({"variants": []}, tmp_path)
    assert jobs.current_run(tmp_path) is None and not (tmp_path / jobs.LOCK_NAME).exists()

"""Run an experiment grid from the app: one background process at a time, guarded by a lock file.

The app starts `python -m qmoe.jobs <spec>` as a subprocess (so training never shares the app's
torch threads or memory, and survives a page reload). The lock file `results/run.lock` is created
atomically (O_EXCL) before the process starts: a second run is refused with a clear message, from
any browser session. The worker rewrites the lock with its pid and progress after every finished
run and removes it when done; a lock whose pid is dead (a killed worker) is stale and cleaned on
the next look. The outcome of the last run is kept in `results/last_run.json`.

A spec may name an executor ("local", the default: the runs one after another in the worker; "ray": on a
local Ray instance or the cluster at spec "address"); QMOE_EXECUTOR / RAY_ADDRESS set the default for the app.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

from . import paths
from .errors import QmoeError
from .store import atomic_write_bytes

LOCK_NAME, LAST_NAME = "run.lock", "last_run.json"


class RunInProgress(QmoeError):
    """Another experiment run holds the lock."""


def _root(root) -> Path:
    return Path(root or paths.RESULTS_DIR)


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    try:  # a zombie (finished child not yet reaped) is dead for our purpose
        return Path(f"/proc/{pid}/stat").read_text().split(") ")[-1][:1] != "Z"
    except OSError:
        return True


def _write(path: Path, data: dict) -> None:
    atomic_write_bytes(path, json.dumps(data, indent=1, default=str).encode())


def current_run(root=None) -> dict | None:
    """The running job's lock record (pid, spec, done, total, current...), or None; cleans a stale lock."""
    lock = _root(root) / LOCK_NAME
    try:
        info = json.loads(lock.read_text())
    except FileNotFoundError:
        return None
    except (json.JSONDecodeError, UnicodeDecodeError):
        info = {}
        if time.time() - lock.stat().st_mtime < 5:  # being created right now
            return {"pid": None, "status": "starting"}
    if info.get("pid") and _alive(int(info["pid"])):
        return info
    lock.unlink(missing_ok=True)  # stale: its process is gone
    return None


def last_run(root=None) -> dict | None:
    """Outcome of the last finished job: status 'done' or 'failed', message, runs, finished time."""
    try:
        return json.loads((_root(root) / LAST_NAME).read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return None


def validate(spec: dict) -> dict:
    """Check a job spec before anything starts (unknown variants etc. raise ConfigError)."""
    from .datasets import dataset_tasks
    from .experiment import RunConfig

    from .executors import EXECUTORS

    spec = {"dataset": "esc50", "tasks": ["major"], "protocols": ["predefined"], "variants": [], "folds": None,
            "seeds": [0], "executor": os.environ.get("QMOE_EXECUTOR") or "local", **spec}
    if spec["executor"] not in EXECUTORS:
        raise QmoeError(f"unknown executor {spec['executor']!r}; choose from {', '.join(EXECUTORS)}")
    if spec.get("address") and spec["executor"] != "ray":
        raise QmoeError("an address is that of a Ray cluster: it needs the ray executor")
    if not spec["variants"] or not spec["tasks"] or not spec["protocols"]:
        raise QmoeError("pick at least one task, protocol and variant to run")
    if spec["folds"] is not None and not spec["folds"]:
        raise QmoeError("pick at least one fold (or all folds)")
    for v in spec["variants"]:
        RunConfig(spec["dataset"], spec["tasks"][0], spec["protocols"][0], v).validate()
    known = dataset_tasks(spec["dataset"])  # also checks a folder dataset's layout, before anything starts
    if unknown := [t for t in spec["tasks"] if t not in known]:
        raise QmoeError(f"{spec['dataset']} has no task {', '.join(unknown)}; its tasks: {', '.join(known)}")
    return spec


def start(spec: dict, root=None) -> dict:
    """Start a grid run in a background process; RunInProgress if one is already going.

    spec: dataset, tasks, protocols, variants, folds (None = all), seeds. Returns the lock record.
    """
    spec = validate(spec)
    root = _root(root)
    root.mkdir(parents=True, exist_ok=True)
    lock = root / LOCK_NAME
    if (info := current_run(root)) is not None:
        raise RunInProgress(_busy_message(info))
    try:
        fd = os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
    except FileExistsError:
        raise RunInProgress(_busy_message(current_run(root) or {})) from None
    os.close(fd)
    log = open(root / "run.log", "w")
    try:
        proc = subprocess.Popen([sys.executable, "-m", "qmoe.jobs", json.dumps(spec), str(root)],
                                cwd=paths.ROOT, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    except BaseException:
        lock.unlink(missing_ok=True)
        raise
    finally:
        log.close()
    info = {"pid": proc.pid, "spec": spec, "started": _now(), "done": 0, "total": None, "current": "starting",
            "status": "running"}
    _write(lock, info)
    return info


def wait(root=None, timeout: float = 600.0, poll: float = 0.5) -> dict | None:
    """Block until no job runs (tests, CLI); returns last_run(). TimeoutError after `timeout` s."""
    end = time.monotonic() + timeout
    while current_run(root) is not None:
        if time.monotonic() > end:
            raise TimeoutError(f"the experiment run did not finish within {timeout:.0f} s")
        time.sleep(poll)
    return last_run(root)


def _busy_message(info: dict) -> str:
    spec = info.get("spec") or {}
    what = ", ".join(spec.get("variants", [])) or "an experiment"
    done = f" ({info.get('done', 0)}/{info['total']} runs done)" if info.get("total") else ""
    return (f"An experiment run is already going (pid {info.get('pid')}, started {info.get('started', '?')}: "
            f"{what}{done}). Wait for it to finish; only one run at a time.")


def _work(spec: dict, root: Path) -> None:
    """The worker process: run the grid, reporting progress through the lock file."""
    from .experiment import run_grid
    from .store import ResultStore

    lock = root / LOCK_NAME
    info = {"pid": os.getpid(), "spec": spec, "started": _now(), "done": 0, "total": None,
            "current": "loading the dataset", "status": "running"}
    _write(lock, info)

    def on_progress(done, total, job):
        info.update(done=done, total=total, current=f"{job.task}/{job.protocol}/{job.variant}/fold {job.fold}")
        _write(lock, info)

    outcome = {"spec": spec, "started": info["started"]}
    try:
        if spec.get("executor", "local") == "ray":
            from .executors import grid_configs, run_configs

            cfgs = grid_configs(spec["dataset"], spec["tasks"], spec["protocols"], spec["variants"], spec["folds"],
                                spec["seeds"])
            records = run_configs(cfgs, ResultStore(root), executor="ray", address=spec.get("address"),
                                  progress=False, on_progress=on_progress)
        else:
            records = run_grid(spec["dataset"], spec["tasks"], spec["protocols"], spec["variants"], spec["folds"],
                               spec["seeds"], store=ResultStore(root), progress=False, on_progress=on_progress)
        outcome.update(status="done", runs=len(records),
                       message=f"{len(records)} run(s) finished and cached (cached ones were read back).")
    except Exception as e:  # reported to the app, never swallowed
        outcome.update(status="failed", runs=info["done"], message=f"{type(e).__name__}: {e}")
        raise
    finally:
        outcome["finished"] = _now()
        _write(root / LAST_NAME, outcome)
        lock.unlink(missing_ok=True)


if __name__ == "__main__":
    _work(json.loads(sys.argv[1]), Path(sys.argv[2]))

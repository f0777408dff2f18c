"""Background jobs of the app: a list of runs (a grid, or a sweep) computed in one background process at a time,
guarded by a lock file, with progress, an ETA and a cancel.

The app starts `python -m qmoe.experiments.jobs <job file>` as a subprocess (so training never shares the app's torch threads
or memory, and survives a page reload). The lock file `results/run.lock` is created atomically (O_EXCL) before the
process starts: a second job is refused with a clear message, from any browser session. A job's runs are fixed and
validated before it starts (`start`: a grid from the Run experiment form; `start_sweep`: a `qmoe.experiments.sweep.Sweep`) and
handed over in `results/job.json`. The job computes them with `executors.run_configs` on 2 worker processes (or
Ray: spec "executor", "address"; QMOE_EXECUTOR / RAY_ADDRESS set the app's default), rewriting the lock with its
progress (done/total, mean seconds per run, ETA) after every finished run, and removes the lock when done; a lock
whose pid is dead (a killed job) is stale and cleaned on the next look. `progress()` reads it, `cancel()` stops
the job: its workers are killed and their runs dropped, so the store keeps only whole runs (the job alone writes
it, each record atomically, and never one of a killed run). The outcome of the last job is kept in
`results/last_run.json`: status done, failed or cancelled.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from dataclasses import asdict
from datetime import datetime, timezone
from pathlib import Path

from ..core import paths
from ..core.errors import QmoeError
from ..core.cache import atomic_write_bytes

LOCK_NAME, LAST_NAME, JOB_NAME = "run.lock", "last_run.json", "job.json"
WORKERS = 2  # worker processes of a local job: this machine's cores


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


def latest(root=None) -> dict | None:
    """The running job's progress (`progress`), else the last finished job's outcome (`last_run`), else None. Both
    carry the job's spec (a sweep's under spec["sweep"]), what and started: what a page draws the job's points from."""
    return progress(root) or last_run(root)


def validate(spec: dict) -> dict:
    """Check a job spec before anything starts (unknown variants etc. raise ConfigError)."""
    from ..datasets import dataset_tasks
    from .experiment import RunConfig

    spec = _executor_spec({"dataset": "esc50", "tasks": ["major"], "protocols": ["predefined"], "variants": [],
                           "folds": None, "seeds": [0], **spec})
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
    """Start a grid in a background process; RunInProgress if a job is already going.

    spec: dataset, tasks, protocols, variants, folds (None = all), seeds; optional executor, address, workers.
    Returns the lock record.
    """
    from .executors import grid_configs

    spec = validate(spec)
    cfgs = grid_configs(spec["dataset"], spec["tasks"], spec["protocols"], spec["variants"], spec["folds"],
                        spec["seeds"])
    return _launch({**spec, "kind": "grid", "what": ", ".join(spec["variants"])}, cfgs, root)


def start_sweep(sweep, root=None, executor: str | None = None, address: str | None = None,
                workers: int | None = None) -> dict:
    """Start a sweep (a `qmoe.experiments.sweep.Sweep` or its dict) in a background process; RunInProgress if a job is already
    going. Its points are named and validated here (a bad alpha or variant raises ConfigError before anything
    starts); cached points are read back by the job, not recomputed. Returns the lock record."""
    from .sweep import Sweep

    sweep = sweep if isinstance(sweep, Sweep) else Sweep.from_dict(sweep)
    spec = _executor_spec({"executor": executor, "address": address, "workers": workers})
    cfgs = sweep.configs()
    return _launch({**spec, "kind": "sweep", "sweep": sweep.to_dict(), "what": f"sweep {sweep.describe()}"}, cfgs,
                   root)


def _executor_spec(spec: dict) -> dict:
    from .executors import EXECUTORS

    spec = {**spec, "executor": spec.get("executor") or os.environ.get("QMOE_EXECUTOR") or "local"}
    if spec["executor"] not in EXECUTORS:
        raise QmoeError(f"unknown executor {spec['executor']!r}; choose from {', '.join(EXECUTORS)}")
    if spec.get("address") and spec["executor"] != "ray":
        raise QmoeError("an address is that of a Ray cluster: it needs the ray executor")
    workers = spec.get("workers")
    if workers is not None and (isinstance(workers, bool) or not isinstance(workers, int) or workers < 1):
        raise QmoeError(f"workers must be a positive integer; got {workers!r}")
    return spec


def _launch(spec: dict, cfgs: list, root) -> dict:
    """Take the lock, hand the job its runs (the job file) and start it."""
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
    try:
        _write(root / JOB_NAME, {"spec": spec, "configs": [asdict(c) for c in cfgs]})
        with open(root / "run.log", "w") as log:
            proc = subprocess.Popen([sys.executable, "-m", "qmoe.experiments.jobs", str(root / JOB_NAME), str(root)],
                                    cwd=paths.ROOT, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    except BaseException:
        lock.unlink(missing_ok=True)
        raise
    info = {"pid": proc.pid, "spec": spec, "what": spec["what"], "started": _now(), "done": 0, "total": len(cfgs),
            "current": "starting", "status": "starting", "eta_s": None}
    _write(lock, info)
    return info


def progress(root=None) -> dict | None:
    """The running job's progress, or None when no job runs: done and total runs (cached runs count as done; the
    same config twice counts once), new_done / new_total (the runs it computes), fraction, run_seconds (mean wall
    time of its runs so far), eta_s (seconds left, counted down since the last finished run; None until one has
    finished), elapsed_s, current (the last finished run), status (starting, running, cancelling), what, pid."""
    info = current_run(root)
    if info is None:
        return None
    eta, updated = info.get("eta_s"), info.get("updated")
    if eta is not None and updated:
        eta = max(0.0, eta - (time.time() - updated))
    total, done = info.get("total") or 0, info.get("done") or 0
    started = info.get("started_unix")
    return {**info, "eta_s": eta, "fraction": done / total if total else 0.0,
            "elapsed_s": round(time.time() - started, 1) if started else info.get("elapsed_s")}


def cancel(root=None) -> dict | None:
    """Stop the running job (SIGTERM): it kills its workers at once and drops the runs in flight; the runs that had
    finished stay cached, each whole. Returns the job's lock record (status "cancelling"), or None if none runs.
    The job then writes last_run() with status "cancelled" and releases the lock (`wait` for it)."""
    info = current_run(root)
    if info is None or not info.get("pid"):
        return info
    try:
        os.kill(int(info["pid"]), signal.SIGTERM)
    except ProcessLookupError:
        return None
    return {**info, "status": "cancelling"}


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
    what = info.get("what") or ", ".join(spec.get("variants", [])) or "an experiment"
    done = f" ({info.get('done', 0)}/{info['total']} runs done)" if info.get("total") else ""
    return (f"An experiment run is already going (pid {info.get('pid')}, started {info.get('started', '?')}: "
            f"{what}{done}). Wait for it to finish; only one run at a time.")


def _work(job_path: Path, root: Path, stopping: threading.Event) -> None:
    """The job process: compute the job's runs, reporting progress through the lock file, until done or stopped."""
    from .executors import Cancelled, run_configs
    from .experiment import RunConfig
    from .store import ResultStore

    job = json.loads(Path(job_path).read_text())
    spec, cfgs = job["spec"], [RunConfig(**c) for c in job["configs"]]
    lock = root / LOCK_NAME
    info = {"pid": os.getpid(), "spec": spec, "what": spec.get("what"), "started": _now(), "started_unix": time.time(),
            "done": 0, "total": len(cfgs), "current": "loading the data", "status": "running", "eta_s": None}
    _write(lock, info)

    def report(state: dict) -> None:
        info.update(state, status="cancelling" if stopping.is_set() else "running")
        if not state.get("current"):
            info["current"] = f"computing {state['new_total']} run(s); {state['cached']} cached"
        _write(lock, info)

    executor = spec.get("executor", "local")
    workers = spec.get("workers") or (WORKERS if executor == "local" else None)
    outcome = {"spec": spec, "what": spec.get("what"), "started": info["started"]}
    try:
        if stopping.is_set():
            raise Cancelled("stopped before it started")
        records = run_configs(cfgs, ResultStore(root), executor=executor, workers=workers,
                              address=spec.get("address"), progress=False, report=report, stop=stopping.is_set,
                              share=spec.get("kind") == "sweep")
        new = info.get("new_done", 0)
        outcome.update(status="done", runs=len(records), new=new,
                       message=f"{len(records)} run(s) finished and cached ({new} computed now, "
                               f"{len(records) - new} read back from the cache).")
    except Cancelled as e:
        done = info.get("done", 0)
        outcome.update(status="cancelled", runs=done, new=info.get("new_done", 0),
                       message=f"cancelled: {done} of {len(cfgs)} runs are cached (each whole); the runs in flight "
                               f"were dropped ({e}).")
    except Exception as e:  # reported to the app, never swallowed
        outcome.update(status="failed", runs=info.get("done", 0), message=f"{type(e).__name__}: {e}")
        raise
    finally:
        outcome["finished"] = _now()
        _write(root / LAST_NAME, outcome)
        lock.unlink(missing_ok=True)


def main(argv: list[str]) -> None:
    """`python -m qmoe.experiments.jobs JOB_FILE ROOT`: SIGTERM (cancel) is caught first thing, so it always stops cleanly."""
    stopping = threading.Event()
    signal.signal(signal.SIGTERM, lambda signum, frame: stopping.set())
    _work(Path(argv[0]), Path(argv[1]), stopping)


if __name__ == "__main__":
    main(sys.argv[1:])

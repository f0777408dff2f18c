"""Where a grid's runs are computed: on this machine's cores (`local`, the default) or on a Ray cluster (`ray`).

An executor only computes (`experiment.compute`: train, evaluate, measure one fold) and hands each result back; the
driver, the one process that holds the result store, writes it (`run_configs`, `reproduce`). So workers on other
machines need no shared `results/` folder, and the store is only ever written by one process, atomically: a record is
written once, whole, or not at all.

- `local`: a pool of worker processes on this machine (`concurrent.futures`); Ray is never imported.
- `ray`: one Ray task per run, reserving `cpus_per_run` CPUs (1 by default), on a private local Ray instance of
  `workers` CPUs, or on an existing cluster (`address`, e.g. "auto" or "head-node:6379"). A worker that dies mid-run
  (killed, out of memory, its node lost) has its task retried by Ray (`retries` times); an error raised by the run
  itself is not retried (it would fail again) and stops the grid with the failing config named.

Workers load the dataset by name, exactly as the driver does (same code, same cache key): the driver checks that each
result comes back under the key it expects, so a node with other data or other engine settings cannot slip a result
into the store. Over the wire go the RunConfig (a few hundred bytes) and the result (its record and per-sample arrays,
tens of kB); no dataset and no model.

Work a grid would repeat is done once: the local pool's workers keep the datasets and prepared folds (splits, z-scored
embeddings) for the life of the pool (`experiment.DataCache`), and the driver loads the datasets and runs the one-time
setup of a fresh process (imports, codecarbon's hardware probe) before it forks them (`prewarm`). A grid can be
stopped (`stop`): no further run starts, the runs in flight are killed and dropped, and `Cancelled` is raised; the
store holds only the runs that finished, each whole.
"""
from __future__ import annotations

import logging
import multiprocessing
import os
import signal
import threading
import time
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from typing import Callable, Iterable, Iterator, NamedTuple

from ..core.errors import ConfigError, QmoeError

EXECUTORS = ("local", "ray")
DEFAULT_RETRIES = 3  # Ray re-runs a task whose worker died this many times before giving up
TEST_HOOKS_ENV = "QMOE_TEST_HOOKS"  # tests only: a folder where workers log each run they start (see `_test_hooks`)


class RunFailed(QmoeError):
    """A run of the grid failed for good (its own error, or its worker died more often than retried)."""

    def __init__(self, cfg, message: str):
        super().__init__(f"run {describe(cfg)} failed: {message}")
        self.cfg = cfg


class Cancelled(QmoeError):
    """The grid was stopped on request; the runs that finished before are stored, the ones in flight were dropped."""


class Done(NamedTuple):
    """One finished run, as the executor hands it to the driver (nothing is stored yet)."""

    index: int  # position in the list given to `map`
    cfg: object  # the RunConfig
    key: str
    record: dict
    arrays: dict
    seconds: float = float("nan")  # the run's wall time on its worker (train, evaluate, measure)


def describe(cfg) -> str:
    """A run in one line: dataset/task/protocol/variant/fold/seed (+ selection and options when not default)."""
    extra = "" if cfg.selection == "validation" else f" selection={cfg.selection}"
    extra += f" options={cfg.options}" if cfg.options else ""
    return f"{cfg.dataset}/{cfg.task}/{cfg.protocol}/{cfg.variant}/fold {cfg.fold}/seed {cfg.seed}{extra}"


def _test_hooks(cfg) -> None:
    """Tests only (inactive unless QMOE_TEST_HOOKS names a folder): log each run a worker starts; when the file
    `kill` exists there, the first run to claim it writes its worker's pid into `victim` (for the test to kill)."""
    folder = os.environ.get(TEST_HOOKS_ENV)
    if not folder:
        return
    with open(os.path.join(folder, "starts.log"), "a") as f:
        f.write(f"{os.getpid()}\t{describe(cfg)}\n")
    if os.path.exists(os.path.join(folder, "kill")):
        try:
            fd = os.open(os.path.join(folder, "victim.tmp"), os.O_CREAT | os.O_EXCL | os.O_WRONLY)
        except FileExistsError:
            return
        os.write(fd, f"{os.getpid()}\t{describe(cfg)}".encode())
        os.close(fd)
        os.replace(os.path.join(folder, "victim.tmp"), os.path.join(folder, "victim"))


_DATA = None  # this worker's experiment.DataCache (local pool workers, which live for one grid)


def _data(reuse: bool):
    global _DATA
    from .experiment import DataCache

    if not reuse:
        return None
    _DATA = _DATA or DataCache()
    return _DATA


def compute_run(cfg, reuse: bool = False) -> tuple[str, dict, dict, float]:
    """What a worker does with one config: (key, record, arrays) of `experiment.compute` and its wall seconds; nothing
    stored. `reuse`: keep datasets and prepared folds in this process for its next configs (a local pool's worker; a
    Ray worker may outlive the data on disk, so it prepares each run afresh)."""
    _test_hooks(cfg)
    from .experiment import compute

    t0 = time.perf_counter()
    key, record, arrays = compute(cfg, progress=False, data=_data(reuse))
    return key, record, arrays, time.perf_counter() - t0


def compute_group(cfgs: list, reuse: bool = False) -> list[tuple[str, dict, dict, float]]:
    """`compute_run` for each of `cfgs`; several configs are runs that train alike (`experiment.training_view`),
    trained once (`experiment.compute_shared`), each run's seconds its share of the group's."""
    if len(cfgs) == 1:
        return [compute_run(cfgs[0], reuse)]
    for c in cfgs:
        _test_hooks(c)
    from .experiment import compute_shared

    t0 = time.perf_counter()
    results = compute_shared(cfgs, progress=False, data=_data(reuse))
    seconds = (time.perf_counter() - t0) / len(cfgs)
    return [(key, record, arrays, seconds) for key, record, arrays in results]


def share_training(cfgs: list) -> list[list[int]]:
    """Groups of indices of `cfgs` whose runs train alike (one training serves each group), in order of first
    appearance; every other config is a group of its own."""
    from .experiment import training_view

    groups: dict = {}
    for i, c in enumerate(cfgs):
        view = training_view(c)
        groups.setdefault(view[0] if view else i, []).append(i)
    return list(groups.values())


def _failed(cfgs: list, group: list[int], message: str) -> "RunFailed":
    others = f" (with {len(group) - 1} run(s) sharing its training)" if len(group) > 1 else ""
    return RunFailed(cfgs[group[0]], message + others)


def prewarm(cfgs) -> None:
    """Do once, in the driver about to fork its workers, what every fresh worker would do on its first run: load the
    datasets (the workers inherit them in their DataCache), import what training and export import lazily (torch.optim
    imports torch._dynamo, ~2.5 s), and run codecarbon's hardware probe (~3.5 s, mostly waiting; codecarbon keeps its
    outcome per process). The probe runs in a thread beside the rest."""
    global _DATA
    from ..measure.energy import EnergyTracker
    from .experiment import DataCache

    def probe():
        with EnergyTracker():
            pass

    thread = threading.Thread(target=probe, name="qmoe-prewarm", daemon=True)
    thread.start()
    try:
        import torch._dynamo  # noqa: F401
        import onnxruntime  # noqa: F401

        from ..deploy import export  # noqa: F401

        _DATA = _DATA or DataCache()
        for c in cfgs:
            _DATA.dataset(c.dataset, c.backbone)
    finally:
        thread.join()


def _worker_init() -> None:
    """A pool worker ends on SIGTERM, whatever handler its driver (a background job) installed before forking it."""
    signal.signal(signal.SIGTERM, signal.SIG_DFL)


class LocalExecutor:
    """Runs on a pool of `workers` processes on this machine (default: its CPU count). No retries: a worker that
    dies breaks the pool (the finished runs are kept; run again to resume)."""

    name = "local"

    def __init__(self, workers: int | None = None):
        self.workers = max(1, workers or os.cpu_count() or 1)
        self._pool = None

    def __str__(self) -> str:
        return f"local executor ({self.workers} processes)"

    def map(self, cfgs: list, stop: Callable[[], bool] | None = None,
            groups: list[list[int]] | None = None) -> Iterator[Done]:
        """Compute every config, yielding each as it finishes. On a failure no further run is started, the runs in
        progress finish (and are yielded), then RunFailed names the failing config. When `stop()` turns true (checked
        twice a second) the workers are killed at once, their runs dropped, and Cancelled is raised. `groups`:
        indices of configs computed together, one training for all (`share_training`); default: each alone."""
        global _DATA
        warmed = False
        if self._pool is None:
            context = multiprocessing.get_context()
            if warmed := context.get_start_method() == "fork" and bool(cfgs):
                prewarm(cfgs)  # inherited by the workers, forked at the first submit below
            self._pool = ProcessPoolExecutor(self.workers, mp_context=context, initializer=_worker_init)
        groups = groups or [[i] for i in range(len(cfgs))]
        futures = {self._pool.submit(compute_group, [cfgs[i] for i in g], True): g for g in groups}
        if warmed:
            _DATA = None  # the workers have their copy; the driver keeps no data that could go stale
        failure, broken = None, False
        try:
            pending = set(futures)
            while pending:
                if stop is not None and stop():
                    self._kill()
                    left = sum(len(futures[f]) for f in pending)
                    raise Cancelled(f"stopped with {left} of {len(cfgs)} runs not finished (dropped)")
                finished, pending = wait(pending, timeout=None if stop is None else 0.5, return_when=FIRST_COMPLETED)
                for fut in finished:
                    g = futures[fut]
                    if fut.cancelled():
                        continue
                    try:
                        results = fut.result()
                    except BrokenProcessPool as e:
                        broken = True
                        failure = failure or _failed(cfgs, g, f"a worker process died ({e}); the local executor "
                                                              "does not retry (--executor ray does)")
                        continue
                    except Exception as e:
                        failure = failure or _failed(cfgs, g, f"{type(e).__name__}: {e}")
                        failure.__cause__ = e
                        continue
                    for i, (key, record, arrays, seconds) in zip(g, results):
                        yield Done(i, cfgs[i], key, record, arrays, seconds)
                if failure is not None:
                    for fut in pending:
                        fut.cancel()  # not started yet: never will be
        finally:
            for fut in futures:
                fut.cancel()
            if broken and self._pool is not None:  # a broken pool runs nothing more: the next map starts a fresh one
                self._pool.shutdown(wait=False)
                self._pool = None
        if failure is not None:
            raise failure

    def _kill(self) -> None:
        """Kill the workers (their runs are dropped: workers never write the store) and forget the pool."""
        pool, self._pool = self._pool, None
        if pool is None:
            return
        processes = list(getattr(pool, "_processes", {}).values())  # Python 3.14 has pool.kill_workers() for this
        for p in processes:
            p.kill()
        pool.shutdown(wait=False, cancel_futures=True)
        for p in processes:
            p.join(timeout=10)

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


class RayExecutor:
    """Runs as Ray tasks: on a private local Ray instance of `workers` CPUs (default: this machine's CPU count),
    or on the existing cluster at `address` ("auto": the one `ray start` runs on this machine, or RAY_ADDRESS).

    If Ray is already initialized in this process, that instance is used (and left running on close)."""

    name = "ray"

    def __init__(self, workers: int | None = None, address: str | None = None, cpus_per_run: float = 1,
                 retries: int = DEFAULT_RETRIES):
        try:
            import ray
        except ImportError as e:
            raise ConfigError("the ray executor needs Ray: pip install -r requirements.txt") from e
        from ..core import paths

        self._ray = ray
        self.cpus_per_run, self.retries = cpus_per_run, retries
        self.address = address or os.environ.get("RAY_ADDRESS") or None
        self._owns = not ray.is_initialized()
        if self._owns:
            # workers import this checkout's qmoe (on a cluster: every node has it at the same path, see README)
            env = {"PYTHONPATH": os.pathsep.join(p for p in (str(paths.ROOT), os.environ.get("PYTHONPATH")) if p)}
            env.update({k: v for k, v in os.environ.items() if k == "QMOE_THREADS"})  # changes float rounding
            common = dict(runtime_env={"env_vars": env}, logging_level=logging.WARNING, log_to_driver=True,
                          configure_logging=True)
            if self.address:
                if workers:
                    raise ConfigError("--workers sizes a local Ray instance; a cluster (--address) has its own CPUs")
                _reachable(self.address)
                try:
                    ray.init(address=self.address, **common)
                except ConnectionError as e:
                    hint = "" if os.environ.get("RAY_AUTH_MODE") else (
                        "; if the cluster requires a token (`ray start` turns that on when ~/.ray/auth_token exists), "
                        "set RAY_AUTH_MODE=token here too (the token: ~/.ray/auth_token or RAY_AUTH_TOKEN)")
                    raise ConfigError(f"could not join the Ray cluster at {self.address!r} ({e}){hint}") from e
            else:  # "local": never join a cluster someone else started on this machine
                ray.init(address="local", num_cpus=workers or os.cpu_count() or 1, include_dashboard=False, **common)
        self._task = ray.remote(compute_group).options(num_cpus=cpus_per_run, max_retries=retries,
                                                       retry_exceptions=False)

    def __str__(self) -> str:
        where = f"cluster at {self.address}" if self.address else "local Ray instance"
        return f"ray executor ({where}, {self.slots()} runs at a time)"

    def slots(self) -> int:
        """Runs the cluster can hold at once right now (grows as nodes join)."""
        return max(1, int(self._ray.cluster_resources().get("CPU", 0) // self.cpus_per_run))

    def map(self, cfgs: list, stop: Callable[[], bool] | None = None,
            groups: list[list[int]] | None = None) -> Iterator[Done]:
        """Compute every config, yielding each as it finishes. Tasks are submitted a window at a time (twice the
        cluster's slots), so a failure stops the grid quickly: no further run starts, the runs in flight finish
        (and are yielded), then RunFailed names the failing config. When `stop()` turns true (checked twice a second)
        the tasks in flight are cancelled (their workers killed) and Cancelled is raised. `groups`: indices of
        configs computed together in one task, one training for all (`share_training`); default: each alone."""
        ray = self._ray
        from ray.exceptions import RayTaskError

        groups = groups or [[i] for i in range(len(cfgs))]
        flight: dict = {}  # ObjectRef -> group
        nxt, failure = 0, None
        try:
            while nxt < len(groups) or flight:
                while failure is None and nxt < len(groups) and len(flight) < 2 * self.slots():
                    flight[self._task.remote([cfgs[i] for i in groups[nxt]])] = groups[nxt]
                    nxt += 1
                if not flight:
                    break
                if stop is not None and stop():
                    unfinished = sum(len(g) for g in groups[nxt:]) + sum(len(g) for g in flight.values())
                    for ref in flight:
                        ray.cancel(ref, force=True)
                    flight.clear()
                    raise Cancelled(f"stopped with {unfinished} of {len(cfgs)} runs not finished (dropped)")
                ready, _ = ray.wait(list(flight), num_returns=1, timeout=None if stop is None else 0.5)
                for ref in ready:
                    g = flight.pop(ref)
                    try:
                        results = ray.get(ref)
                    except RayTaskError as e:  # the run raised: deterministic, not retried
                        cause = e.cause if isinstance(e.cause, BaseException) else e
                        failure = failure or _failed(cfgs, g, f"{type(cause).__name__}: {cause}")
                        continue
                    except Exception as e:  # worker / node died more often than retried, out of memory...
                        failure = failure or _failed(cfgs, g, f"Ray gave up on it (a dead worker is retried "
                                                              f"{self.retries} times): {type(e).__name__}: {e}")
                        continue
                    for i, (key, record, arrays, seconds) in zip(g, results):
                        yield Done(i, cfgs[i], key, record, arrays, seconds)
                if failure is not None:
                    nxt = len(groups)  # submit nothing more; drain what is in flight
        finally:
            for ref in flight:  # the driver stops early (an error, Ctrl-C): do not leave runs busy on the cluster
                ray.cancel(ref)
        if failure is not None:
            raise failure

    def close(self) -> None:
        if self._owns and self._ray.is_initialized():
            self._ray.shutdown()
        self._owns = False

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def _reachable(address: str, timeout: float = 10.0) -> None:
    """Fail fast on a head node nobody answers at (Ray itself retries an unreachable GCS for many minutes)."""
    import socket

    if address == "auto" or "://" in address or ":" not in address:
        return
    host, port = address.rsplit(":", 1)
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=timeout).close()
    except (OSError, ValueError) as e:
        raise ConfigError(f"no Ray cluster answers at {address!r} ({e}); start one with `ray start --head` there, or "
                          "leave out --address for a local Ray instance") from e


def get_executor(name: str = "local", workers: int | None = None, address: str | None = None, **kw):
    """An executor by name: "local" (default; Ray is not imported) or "ray" (see RayExecutor). Close it when done
    (it is a context manager)."""
    if name == "local":
        if address:
            raise ConfigError("--address is the address of a Ray cluster: use it with --executor ray")
        return LocalExecutor(workers)
    if name == "ray":
        return RayExecutor(workers, address, **kw)
    raise ConfigError(f"unknown executor {name!r}; choose from {', '.join(EXECUTORS)}")


def expected_keys(cfgs: Iterable) -> list[str]:
    """The cache key of each config, loading each dataset once."""
    from ..core.cache import config_key
    from ..datasets import get_dataset
    from .experiment import full_config

    datasets, out = {}, []
    for c in cfgs:
        if (c.dataset, c.backbone) not in datasets:
            datasets[c.dataset, c.backbone] = get_dataset(c.dataset, c.backbone)
        out.append(config_key(full_config(c, datasets[c.dataset, c.backbone])))
    return out


def check_key(done: Done, expected: str) -> None:
    """A result must come back under the key the driver computed for its config: otherwise the worker had other data
    (embeddings), other settings or other engine code, and its result does not belong under this config."""
    if done.key != expected:
        raise RunFailed(done.cfg, f"the worker computed it under cache key {done.key}, the driver expects {expected}: "
                                  "the worker's dataset, embedding or engine differs from the driver's")


def grid_configs(dataset: str = "esc50", tasks=("major",), protocols=("predefined",), variants=("FP32-Base",),
                 folds=None, seeds=(0,), **kw) -> list:
    """The configs `experiment.run_grid` runs, in its order (every fold of a protocol when `folds` is None)."""
    from ..datasets import get_dataset
    from .experiment import RunConfig

    ds = get_dataset(dataset, kw.get("backbone"))
    cfgs = [RunConfig(dataset, t, p, v, f, s, **kw) for t in tasks for p in protocols for v in variants
            for f in (folds or ds.fold_ids(p)) for s in seeds]
    for c in cfgs:
        c.validate()
    return cfgs


class Progress:
    """Where a grid stands, for a progress bar or a background job's status: runs done (cached ones included) of
    total, the new runs' mean wall seconds on a worker and the estimated seconds left (None before a run finished)."""

    def __init__(self, total: int, cached: int, parallel: int):
        self.total, self.cached, self.parallel = total, cached, max(1, parallel)
        self.started, self.seconds, self.current = time.time(), [], ""

    def finished(self, d: Done) -> None:
        if d.seconds == d.seconds:  # not NaN
            self.seconds.append(d.seconds)
        self.current = f"{describe(d.cfg)} F1 {d.record['f1_macro']:.3f}"

    @property
    def done(self) -> int:
        return self.cached + len(self.seconds)

    def eta_s(self) -> float | None:
        """Seconds left: the runs left times their mean time, spread over the workers (runs in flight count whole,
        so the estimate leans long by up to a run)."""
        left = self.total - self.done
        if not left:
            return 0.0
        if not self.seconds:
            return None
        return left * (sum(self.seconds) / len(self.seconds)) / min(self.parallel, left)

    def as_dict(self) -> dict:
        return {"done": self.done, "total": self.total, "cached": self.cached, "new_done": len(self.seconds),
                "new_total": self.total - self.cached, "elapsed_s": round(time.time() - self.started, 1),
                "run_seconds": round(sum(self.seconds) / len(self.seconds), 1) if self.seconds else None,
                "eta_s": None if (eta := self.eta_s()) is None else round(eta, 1), "current": self.current,
                "updated": time.time()}


def run_configs(cfgs: list, store=None, executor="local", workers: int | None = None, address: str | None = None,
                on_progress: Callable | None = None, progress: bool = True, stop: Callable[[], bool] | None = None,
                report: Callable[[dict], None] | None = None, share: bool = False) -> list[dict]:
    """Run `cfgs` on an executor (a name, or an executor object, left open); the driver (this process) writes every
    result into `store`. Cached runs are read back, not recomputed; a config listed twice is computed once.

    Returns the stored record of every config, in order. on_progress(done, total, cfg) after each finished run
    (done counts the cached ones); report(Progress.as_dict()) once before the first run and after each (with an ETA).
    `stop()` true: the runs in flight are dropped and Cancelled raised (the finished ones are stored, whole).
    `share`: runs that train alike are trained once (`share_training`; a sweep does this); their records say so.
    This is what `train --executor ray`, the app's background jobs and sweeps call.
    """
    from tqdm.auto import tqdm

    from .store import ResultStore

    store = store or ResultStore()
    for c in cfgs:
        c.validate()
    keys = expected_keys(cfgs)
    todo: dict[str, int] = {}  # key -> first index of a config not cached yet
    for i, k in enumerate(keys):
        if k not in todo and store.get(k) is None:
            todo[k] = i
    total, done = len(set(keys)), len(set(keys)) - len(todo)
    if todo:
        if stop is not None and stop():
            raise Cancelled(f"stopped before any of {len(todo)} runs started")
        ex = get_executor(executor, workers, address) if isinstance(executor, str) else executor
        state = Progress(total, done, getattr(ex, "workers", None) or ex.slots())
        if report:
            report(state.as_dict())
        bar = tqdm(total=total, initial=done, desc="runs", unit="run", disable=not progress)
        try:
            batch = [cfgs[i] for i in todo.values()]
            batch_keys = list(todo)
            extra = {"stop": stop} if stop is not None else {}
            if share and len(groups := share_training(batch)) < len(batch):
                extra["groups"] = groups
            for d in ex.map(batch, **extra):
                check_key(d, batch_keys[d.index])
                store.put(d.key, d.record, d.arrays)
                done += 1
                state.finished(d)
                bar.update(1)
                bar.set_postfix_str(state.current)
                if on_progress:
                    on_progress(done, total, d.cfg)
                if report:
                    report(state.as_dict())
        finally:
            bar.close()
            if isinstance(executor, str):
                ex.close()
    out = []
    for c, k in zip(cfgs, keys):
        rec = store.get(k)
        if rec is None:
            raise RunFailed(c, "its record is missing from the store after the run")
        out.append(rec)
    return out

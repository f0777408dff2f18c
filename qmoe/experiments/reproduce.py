"""`python -m qmoe reproduce`: the whole ESC-50 grid of the paper, resumable and crash-safe.

The grid is data (stages of RunConfigs). Every run is cached atomically under its config hash, so an
interrupted reproduce resumes where it stopped and a finished run is never redone. Runs are spread
over worker processes that each load the dataset and the registry once (the naive alternative,
one fresh process per config, is what `bench/grid.py` compares against): this machine's cores by
default, or a Ray cluster (`executor="ray"`, see `qmoe.experiments.executors`). Workers only compute; this
process (the driver) writes every result into the store.
"""
from __future__ import annotations

import os
import time

import numpy as np
from tqdm.auto import tqdm

from ..core.cache import config_key
from ..core.errors import QmoeError
from ..datasets import get_dataset
from .executors import check_key, describe, get_executor
from .experiment import RunConfig, compute, full_config, run_key
from .store import ResultStore

SINGLE = ("FP32-Base", "Q1-Base", "Q2-Base", "Q4-Base", "Q8-Base", "Q16-Base", "BitNet-Base", "Q8-Base-PTQ",
          "Popcount-Base")
MOE = ("BitNet-Q4/8/16-QMoE", "BitNet-Q8/16-PTQ-QMoE", "BitNet-Q8PTQ-QMoE", "BitNet-Q4/8-QMoE-uniform",
       *(f"{base}-C@{alpha}" for alpha in ("0.3", "0.2") for base in
         ("BitNet-Q4/8-QMoE", "BitNet-Q4/8/16-QMoE", "BitNet-Q8/16-PTQ-QMoE", "BitNet-Q8PTQ-QMoE")))
SWEEP_VARIANT = "BitNet-Q4/8-QMoE-C@0.3"  # the paper's sweep model (Sec. 5.3); alpha overridden
SWEEP_ALPHAS = (0.0, 0.02, 0.1, 0.2, 0.3, 0.5, 1.0)
VARIANCE_VARIANTS = ("BitNet-Q4/8-QMoE-uniform", "BitNet-Q4/8-QMoE-C@0.2", "BitNet-Q4/8-QMoE-C@0.3", "Q8-Base",
                     "Q16-Base")
SEEDS = (0, 1, 2, 3, 4)


def _grid(variants, tasks, protocols, seeds=(0,), folds=(1, 2, 3, 4, 5), **kw) -> list[RunConfig]:
    return [RunConfig("esc50", t, p, v, f, s, **kw) for t in tasks for p in protocols for v in variants
            for s in seeds for f in folds]


def sweep_config(alpha: float, seed: int, task: str = "major", protocol: str = "predefined", fold: int = 1):
    """The alpha-sweep run of BitNet-Q4/8-QMoE-C at `alpha` (the registered @0.2/@0.3 when they match)."""
    named = {0.2: "BitNet-Q4/8-QMoE-C@0.2", 0.3: "BitNet-Q4/8-QMoE-C@0.3"}
    if alpha in named:
        return RunConfig("esc50", task, protocol, named[alpha], fold, seed)
    return RunConfig("esc50", task, protocol, SWEEP_VARIANT, fold, seed, options={"alpha": alpha})


def stages(seeds=SEEDS) -> dict[str, list[RunConfig]]:
    """The grid, in the order it is run (most important first, so a partial run is still useful)."""
    folds = (1, 2, 3, 4, 5)
    return {
        "single models (predefined)": _grid(SINGLE, ["major", "class"], ["predefined"]),
        "MoE (predefined, major)": _grid(MOE, ["major"], ["predefined"]),
        "alpha sweep": [sweep_config(a, 0, fold=f) for a in SWEEP_ALPHAS for f in folds],
        "variance over seeds": _grid(VARIANCE_VARIANTS, ["major"], ["predefined"], seeds),
        "MoE (predefined, class)": _grid(MOE, ["class"], ["predefined"]),
        "paper protocol (single)": _grid(SINGLE, ["major", "class"], ["paper"]),
        "paper protocol (MoE)": _grid(MOE, ["major"], ["paper"]),
        "variance over seeds (paper protocol)": _grid(VARIANCE_VARIANTS, ["major"], ["paper"], seeds),
        "reference model selection": _grid(("FP32-Base", "Q4-Base"), ["major"], ["paper"],
                                           selection="reported-fold"),
    }


def _check_cached(store: ResultStore, cfg: RunConfig, key: str) -> None:
    if store.get(key) is None or "y_pred" not in store.arrays(key):
        raise QmoeError(f"{cfg}: not cached, nothing to re-time (run it first)")


def _replace_timings(store: ResultStore, cfg: RunConfig, key: str, record: dict, arrays: dict) -> None:
    """Store a re-run in place of the cached run, if it predicts exactly what the cached run did."""
    if not np.array_equal(store.arrays(key)["y_pred"], arrays["y_pred"]):
        raise QmoeError(f"{cfg}: the re-run predicted differently from the cached run; kept the cached run")
    store.put(key, record, arrays)


def retime_one(cfg: RunConfig, root: str) -> tuple[RunConfig, float]:
    """Re-run a cached run to re-measure its timings (e.g. on a quiet machine) and replace it.

    Training is deterministic given the seed, so the re-run must predict exactly what the cached run did;
    if it does not, the cached run is kept and QmoeError says so (a timing pass never changes a result).
    """
    store, key = ResultStore(root), run_key(cfg)
    _check_cached(store, cfg, key)
    key, record, arrays = compute(cfg, progress=False)
    _replace_timings(store, cfg, key, record, arrays)
    return cfg, record["f1_macro"]


def plan(only: list[str] | None = None, seeds=SEEDS, tasks: list[str] | None = None) -> list[tuple[str, RunConfig]]:
    """(stage, config) of every run of the named stages (all by default), optionally of some tasks only."""
    return [(name, c) for name, cfgs in stages(seeds).items() if not only or name in only for c in cfgs
            if not tasks or c.task in tasks]


def keyed(runs: list[tuple[str, RunConfig]]) -> dict[str, tuple[str, RunConfig]]:
    """{cache key: (stage, config)}, loading each dataset once rather than once per config; stages that share a
    run (the variance stages reuse seed 0) collapse to one entry."""
    datasets = {}
    out = {}
    for name, c in runs:
        if (c.dataset, c.backbone) not in datasets:
            datasets[c.dataset, c.backbone] = get_dataset(c.dataset, c.backbone)
        out.setdefault(config_key(full_config(c, datasets[c.dataset, c.backbone])), (name, c))
    return out


def status(store: ResultStore | None = None, seeds=SEEDS, tasks: list[str] | None = None):
    """([(stage, runs, cached)], distinct runs in all) — what `reproduce --list` prints."""
    store = store or ResultStore()
    rows, everything = [], {}
    for name in stages(seeds):
        runs = keyed(plan([name], seeds, tasks))
        rows.append((name, len(runs), sum(store.get(k) is not None for k in runs)))
        everything.update(runs)
    return rows, len(everything)


def reproduce(store: ResultStore | None = None, workers: int | None = None, only: list[str] | None = None,
              seeds=SEEDS, on_progress=None, configs: list[RunConfig] | None = None, tasks: list[str] | None = None,
              retime: bool = False, stage_times: dict | None = None, executor="local",
              address: str | None = None) -> int:
    """Run every stage (or `only` those named, or just `configs`); returns the number of runs computed now.

    Stages run one after another (a stage's runs in parallel), so each stage's wall time is known: it is written
    into `stage_times` ({stage: (runs computed, seconds)}) when given. retime=True re-runs the selected runs that
    are cached (see `retime_one`) instead of the missing ones. `executor`: "local" (this machine's processes,
    `workers` of them), "ray" (a local Ray instance of `workers` CPUs, or the cluster at `address`) or an executor
    object (left open). Either way the runs are computed by workers and written into `store` by this process.
    """
    store = store or ResultStore()
    runs = keyed([("configs", c) for c in configs] if configs is not None else plan(only, seeds, tasks))
    todo = [(k, n, c) for k, (n, c) in runs.items() if (store.get(k) is not None) == retime]
    if retime:
        for k, _, c in todo:
            _check_cached(store, c, k)
    by_stage: dict[str, list[tuple[str, RunConfig]]] = {}
    for key, name, c in todo:
        by_stage.setdefault(name, []).append((key, c))
    total = len(todo) if retime else len(runs)
    done = 0
    if not todo:
        return 0
    if isinstance(executor, str):
        if not (workers or address):  # a cluster sizes itself; this machine: one process per core
            workers = max(1, min(len(todo), os.cpu_count() or 1))
        ex = get_executor(executor, workers, address)
    else:
        ex = executor
    bar = tqdm(total=total, initial=total - len(todo), desc="re-time" if retime else "reproduce", unit="run")
    try:
        for name, jobs in by_stage.items():
            t0 = time.perf_counter()
            for d in ex.map([c for _, c in jobs]):
                key = jobs[d.index][0]
                check_key(d, key)
                if retime:
                    _replace_timings(store, d.cfg, key, d.record, d.arrays)
                else:
                    store.put(key, d.record, d.arrays)
                done += 1
                bar.update(1)
                bar.set_postfix_str(f"{name}: {describe(d.cfg)} F1 {d.record['f1_macro']:.3f}")
                if on_progress:
                    on_progress(total - len(todo) + done, total)
            seconds = time.perf_counter() - t0
            tqdm.write(f"stage '{name}': {len(jobs)} runs in {seconds:.0f} s wall time")
            if stage_times is not None:
                stage_times[name] = (len(jobs), seconds)
    finally:
        bar.close()
        if isinstance(executor, str):
            ex.close()
    return done

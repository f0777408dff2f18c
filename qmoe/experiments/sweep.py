"""Sweeps: one grid over curiosity alpha, bit-widths, other MoE options, expert sets, seeds and folds, computed on
every core, cached run by run, and read back as a frame of points.

A sweep is data (`Sweep`). Every point is a name the registry builds, so it is cached (and found again) like any run:
- an alpha sweep of a paper MoE-C (`BitNet-Q4/8-QMoE-C`) uses the names the paper's grid caches: `@0.2` / `@0.3`
  where alpha is one of those, else `@0.3` with alpha overridden (as `qmoe.experiments.reproduce.sweep_config`), so the points
  `python -m qmoe reproduce` computed are read back, not recomputed;
- a bit-width is `Q<k>-Base` (any k from 1 to 16);
- an expert set or other MoE options make an MoE named by its parts, `MoE(<experts> | alpha=..., T=..., ...)`
  (`qmoe.models.moe.moe_name`); a paper MoE given other options keeps its name, the options override its builder's.

`run_sweep` computes the points not cached yet (`executors.run_configs`: 2 local worker processes by default, or
Ray; the workers share the datasets and prepared folds; points that differ only in inference-time routing share one
training) and returns every point, `new` marking those this call computed. `points_frame` reads a sweep's points
from the cache without running anything. The app runs a sweep as a background job (`qmoe.experiments.jobs.start_sweep`,
`progress` with an ETA, `cancel`).
"""
from __future__ import annotations

import itertools
import math
from dataclasses import asdict, dataclass, field, fields
from typing import Callable, NamedTuple

import numpy as np
import pandas as pd

from ..audio.backbones import DEFAULT_BACKBONE
from ..core.errors import ConfigError
from ..models.moe import _CURIOUS, MOE_PART_DEFAULTS, PAPER_ALPHAS, moe_name, moe_parts
from ..models.quantizers import check_bits
from ..models.registry import create_model, get_variant
from .experiment import SELECTIONS, RunConfig

DEFAULT_WORKERS = 2  # this machine's cores; a sweep keeps both busy
DEFAULT_VARIANT = "BitNet-Q4/8-QMoE-C"  # the paper's sweep model (Sec. 5.3), when only MoE options are given
EXPERT_SET_DEFAULTS = {"bayesian": True, "alpha": 0.3}  # an expert set's MoE: the paper's MoE-C recipe by default
POINT_COLUMNS = ["base", "variant", "options", "dataset", "task", "protocol", "fold", "seed", "selection", "family",
                 "bits", "experts", "alpha", "temperature", "top_k", "mc_samples", "bayesian", "curiosity_mode",
                 "curiosity_in_training", "f1_macro", "accuracy", "params", "model_bytes", "latency_ms_mean",
                 "latency_ms_std", "energy_mj", "train_seconds", "epochs", "best_epoch", "key", "cached", "new"]


class Point(NamedTuple):
    """One point of a sweep: the name it was asked as (`base`) and the run that computes it."""

    base: str
    cfg: RunConfig


def _tuple(name: str, values, kind=None) -> tuple:
    if values is None or isinstance(values, (str, bytes)) or not hasattr(values, "__iter__"):
        raise ConfigError(f"sweep {name} must be a list; got {values!r}")
    return tuple(values if kind is None else (kind(v) for v in values))


def _alpha(a) -> float:
    if isinstance(a, bool) or not isinstance(a, (int, float, np.integer, np.floating)) or not math.isfinite(a) \
            or a < 0:
        raise ConfigError(f"curiosity strength alpha must be a finite number >= 0; got {a!r}")
    return float(a)


@dataclass(frozen=True)
class Sweep:
    """What a sweep varies. Every combination of the MoE values (alphas x each `moe` option's values) is applied to
    every MoE base: the MoE `variants` and one MoE per expert set in `experts` (the paper's MoE-C recipe unless `moe`
    says otherwise). Single-model bases (`variants`, and `Q<k>-Base` for each of `bits`) run as they are, once per
    task/protocol/fold/seed. `moe` maps QuantizedMoE keywords (temperature, top_k, mc_samples, bayesian,
    curiosity_mode, curiosity_in_training) to the values to sweep. `options`: builder overrides for every point
    (e.g. {"expert_options": {"hidden": [64]}}: smaller MoE experts for a quick look). `folds` None: every fold."""

    variants: tuple = ()
    alphas: tuple = ()
    bits: tuple = ()
    experts: tuple = ()
    moe: dict = field(default_factory=dict)
    options: dict = field(default_factory=dict)
    dataset: str = "esc50"
    tasks: tuple = ("major",)
    protocols: tuple = ("predefined",)
    folds: tuple | None = None
    seeds: tuple = (0,)
    selection: str = "validation"
    backbone: str = DEFAULT_BACKBONE

    def __post_init__(self):
        set_ = lambda name, value: object.__setattr__(self, name, value)  # noqa: E731 (frozen)
        set_("variants", _tuple("variants", self.variants, str))
        set_("alphas", _tuple("alphas", self.alphas, _alpha))
        set_("bits", _tuple("bits", self.bits, check_bits))
        set_("experts", _tuple("experts", self.experts, lambda e: moe_parts(_tuple("expert set", e, str))[0]))
        if not isinstance(self.moe, dict):
            raise ConfigError(f"sweep moe options must be a mapping of option -> values; got {self.moe!r}")
        if unknown := set(self.moe) - (set(MOE_PART_DEFAULTS) - {"alpha"}):
            hint = " (alpha: give alphas)" if "alpha" in unknown else ""
            raise ConfigError(f"unknown MoE option(s) to sweep: {', '.join(sorted(unknown))}{hint}; known: "
                              f"{', '.join(k for k in MOE_PART_DEFAULTS if k != 'alpha')}")
        moe = {k: _tuple(f"moe option {k}", v) for k, v in self.moe.items()}
        if empty := [k for k, v in moe.items() if not v]:
            raise ConfigError(f"give at least one value for MoE option(s) {', '.join(empty)}")
        set_("moe", moe)
        if not isinstance(self.options, dict):
            raise ConfigError(f"sweep options must be a mapping of builder option -> value; got {self.options!r}")
        set_("tasks", _tuple("tasks", self.tasks, str))
        set_("protocols", _tuple("protocols", self.protocols, str))
        set_("seeds", _tuple("seeds", self.seeds, _whole("seed", 0)))
        if self.folds is not None:
            set_("folds", _tuple("folds", self.folds, _whole("fold", 1)))
        for name in ("tasks", "protocols", "seeds"):
            if not getattr(self, name):
                raise ConfigError(f"a sweep needs at least one of its {name}")
        if self.folds is not None and not self.folds:
            raise ConfigError("a sweep needs at least one fold (folds=None: all of them)")
        if self.selection not in SELECTIONS:
            raise ConfigError(f"unknown selection {self.selection!r}; choose from {', '.join(SELECTIONS)}")
        if not (self.variants or self.bits or self.experts):
            raise ConfigError("a sweep needs something to run: variants, bits or expert sets")
        moe_bases = [v for v in self.variants if _family(v) == "moe"]
        if (self.alphas or self.moe) and not (moe_bases or self.experts):
            raise ConfigError("alphas and MoE options apply to MoE variants or expert sets; this sweep has none")
        for v in self.variants:
            if v in _CURIOUS and not self.alphas:
                raise ConfigError(f"{v!r} names the MoE-C at every alpha: give alphas, or name one "
                                  f"({v}@0.2 or {v}@0.3)")

    def points(self) -> list[Point]:
        """Every point, in sweep order: base, then MoE values, then task, protocol, seed, fold."""
        from ..datasets import dataset_tasks, get_dataset

        known = dataset_tasks(self.dataset)  # an unknown dataset or task fails here, before anything runs
        if unknown := [t for t in self.tasks if t not in known]:
            raise ConfigError(f"{self.dataset} has no task {', '.join(unknown)}; its tasks: {', '.join(known)}")
        ds = get_dataset(self.dataset, self.backbone)
        for p in self.protocols:
            if bad := [f for f in (self.folds or ()) if f not in ds.fold_ids(p)]:
                raise ConfigError(f"fold(s) {bad} do not exist under protocol {p!r}: {ds.fold_ids(p)}")
        keys = ["alpha"] * bool(self.alphas) + list(self.moe)
        combos = [dict(zip(keys, values)) for values in itertools.product(*([self.alphas] * bool(self.alphas)),
                                                                         *self.moe.values())]
        out = []
        for base in self._bases():
            named = [_apply(base, c) for c in combos] if _family(base) == "moe" and combos else [(base, {})]
            for variant, options in dict.fromkeys((v, tuple(sorted(o.items()))) for v, o in named):
                if clash := set(dict(options)) & set(self.options):
                    raise ConfigError(f"option(s) {', '.join(sorted(clash))} are swept; they cannot be fixed as well")
                options = {**dict(options), **self.options}
                for t, p, s in itertools.product(self.tasks, self.protocols, self.seeds):
                    for f in self.folds or ds.fold_ids(p):
                        out.append(Point(base, RunConfig(self.dataset, t, p, variant, f, s, self.backbone,
                                                         self.selection, dict(options))))
        built = set()
        for pt in out:  # a misspelt or foreign option fails here, not in a worker halfway through the sweep
            pt.cfg.validate()
            if (what := (pt.cfg.variant, repr(sorted(pt.cfg.options.items())))) not in built:
                built.add(what)
                create_model(pt.cfg.variant, 8, 2, **pt.cfg.options)
        return out

    def configs(self) -> list[RunConfig]:
        return [p.cfg for p in self.points()]

    def _bases(self) -> list[str]:
        fixed = {**EXPERT_SET_DEFAULTS, **{k: v[0] for k, v in self.moe.items() if len(v) == 1}}
        return list(dict.fromkeys([*self.variants, *(f"Q{b}-Base" for b in self.bits),
                                   *(moe_name(e, **fixed) for e in self.experts)]))

    def to_dict(self) -> dict:
        """JSON-ready (a background job's spec); `Sweep(**d)` reads it back."""
        d = asdict(self)
        d["experts"] = [list(e) for e in self.experts]
        d["moe"] = {k: list(v) for k, v in self.moe.items()}
        d["options"] = dict(self.options)
        return {k: list(v) if isinstance(v, tuple) else v for k, v in d.items()}

    @classmethod
    def from_dict(cls, d: dict) -> "Sweep":
        names = {f.name for f in fields(cls)}
        if unknown := set(d) - names:
            raise ConfigError(f"unknown sweep field(s) {', '.join(sorted(unknown))}; known: {', '.join(sorted(names))}")
        return cls(**d)

    def describe(self) -> str:
        """The sweep in one line (a job's label)."""
        parts = [", ".join(self._bases())]
        if self.alphas:
            parts.append("alpha " + "/".join(f"{a:g}" for a in self.alphas))
        parts += [f"{k} " + "/".join(map(str, v)) for k, v in self.moe.items()]
        parts.append(f"{'/'.join(self.tasks)}, {'/'.join(self.protocols)}, "
                     f"folds {'/'.join(map(str, self.folds)) if self.folds else 'all'}, "
                     f"seeds {'/'.join(map(str, self.seeds))}")
        return f"{self.dataset}: " + "; ".join(parts)


def _whole(name: str, low: int):
    def check(v) -> int:
        if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < low:
            raise ConfigError(f"a {name} must be an integer >= {low}; got {v!r}")
        return int(v)
    return check


def _family(name: str) -> str:
    return "moe" if name in _CURIOUS else get_variant(name).family


def _apply(base: str, combo: dict) -> tuple[str, dict]:
    """(variant, options) of MoE `base` at the MoE values `combo`, named as the cache already names such runs."""
    stem = base.split("@", 1)[0]
    spec = get_variant(f"{stem}@0.3" if base in _CURIOUS else base)
    parts = {k: spec.options.get(k, v) for k, v in MOE_PART_DEFAULTS.items()}
    experts, full = moe_parts(spec.options["experts"], **{**parts, **combo})  # validates combo against this MoE
    if base.startswith("MoE("):  # named by its parts: a new point is a new name
        return moe_name(experts, **full), {}
    options = {k: full[k] for k in combo}
    # the names of qmoe.experiments.reproduce.sweep_config, so the points the grid cached are found
    if stem in _CURIOUS and "alpha" in options:
        alpha = options.pop("alpha")
        if alpha in PAPER_ALPHAS:
            return f"{stem}@{alpha}", options
        return f"{stem}@0.3", {"alpha": alpha, **options}
    return base, options


def _cost(cfg: RunConfig) -> tuple:
    """A rough order of a run's cost, longest first (so the last runs to finish are short ones, not a long one on
    one core while the other idles): MoE experts (all of them run on every row under Eq. 8), then the protocol's
    first fold (it also measures peak RAM in fresh processes)."""
    spec = get_variant(cfg.variant)
    options = {**spec.options, **cfg.options}
    experts = len(options.get("experts", ())) or 1
    return experts * (2 if options.get("alpha", 0) > 0 else 1), cfg.fold == 1


def _row(point: Point, record: dict | None, key: str, new: bool) -> dict:
    cfg = point.cfg
    spec = get_variant(cfg.variant)
    options = {**spec.options, **cfg.options}
    row = {"base": point.base, "variant": cfg.variant,
           "options": ",".join(f"{k}={v}" for k, v in sorted(cfg.options.items())),
           "dataset": cfg.dataset, "task": cfg.task, "protocol": cfg.protocol, "fold": cfg.fold, "seed": cfg.seed,
           "selection": cfg.selection, "family": spec.family, "bits": spec.bits, "key": key,
           "cached": record is not None, "new": new}
    if spec.family == "moe":
        row["experts"] = ", ".join(options["experts"])
        row.update({k: options.get(k, v) for k, v in MOE_PART_DEFAULTS.items()})
    for k in ("f1_macro", "accuracy", "params", "model_bytes", "latency_ms_mean", "latency_ms_std", "energy_mj",
              "train_seconds", "epochs", "best_epoch"):
        row[k] = (record or {}).get(k)
    return row


def _frame(points: list[Point], keys: list[str], store, new_keys=frozenset(), since: str | None = None) -> pd.DataFrame:
    records = [store.get(k) for k in keys]
    if since is not None:  # computed by a job that started at `since` (records carry their creation time)
        new_keys = {k for k, r in zip(keys, records) if r is not None and str(r.get("created", "")) >= since}
    rows = [_row(p, r, k, k in new_keys) for p, r, k in zip(points, records, keys)]
    df = pd.DataFrame(rows, columns=POINT_COLUMNS)
    for c in ("bits", "alpha", "temperature", "f1_macro", "accuracy", "latency_ms_mean", "latency_ms_std", "energy_mj",
              "train_seconds"):
        df[c] = pd.to_numeric(df[c], errors="coerce")
    return df


def _as_points(sweep) -> list[Point]:
    if isinstance(sweep, Sweep):
        return sweep.points()
    if isinstance(sweep, dict):
        return Sweep.from_dict(sweep).points()
    cfgs = list(sweep)
    if not all(isinstance(c, RunConfig) for c in cfgs):
        raise ConfigError("a sweep is a Sweep, its dict, or a list of RunConfig")
    for c in cfgs:
        c.validate()
    return [Point(c.variant, c) for c in cfgs]


def points_frame(sweep, store=None, since: str | None = None) -> pd.DataFrame:
    """Every point of `sweep` (a Sweep, its dict or a list of RunConfig) with its cached result where there is one
    (`cached`), nothing computed: what a page shows while the sweep runs. `since`: an ISO time (a job's `started`);
    `new` then marks the points cached at or after it."""
    from .executors import expected_keys
    from .store import ResultStore

    points = _as_points(sweep)
    return _frame(points, expected_keys([p.cfg for p in points]), store or ResultStore(), since=since)


def run_sweep(sweep, store=None, executor="local", workers: int | None = None, address: str | None = None,
              progress: bool = True, on_progress: Callable | None = None, report: Callable | None = None,
              stop: Callable[[], bool] | None = None) -> pd.DataFrame:
    """Compute the points of `sweep` (a Sweep, its dict or a list of RunConfig) that are not cached yet and return
    every point (`points_frame` columns, one row per run), `new` True for those this call computed.

    Runs go longest first to `executors.run_configs` (`executor` "local": `workers` processes on this machine, 2 by
    default; "ray": a local Ray instance of `workers` CPUs or the cluster at `address`); points that train alike
    (MoE points differing only in inference-time settings: alpha with curiosity off in training, Monte Carlo passes)
    share one training (`experiment.fit_shared`; their records carry `train_shared_by`). on_progress / report / stop:
    see `run_configs` (stop -> executors.Cancelled; the finished points stay cached)."""
    from .executors import expected_keys, run_configs
    from .store import ResultStore

    store = store or ResultStore()
    points = _as_points(sweep)
    cfgs = [p.cfg for p in points]
    keys = expected_keys(cfgs)
    before = {k for k in dict.fromkeys(keys) if store.get(k) is not None}
    order = sorted(range(len(cfgs)), key=lambda i: _cost(cfgs[i]), reverse=True)
    if executor == "local":
        workers = workers or DEFAULT_WORKERS
    run_configs([cfgs[i] for i in order], store, executor=executor, workers=workers, address=address,
                progress=progress, on_progress=on_progress, report=report, stop=stop, share=True)
    return _frame(points, keys, store, new_keys=set(keys) - before)


def summary(points: pd.DataFrame) -> pd.DataFrame:
    """Mean and fold std of F1 per point over its folds (per variant/options/task/protocol/seed)."""
    keys = ["base", "variant", "options", "task", "protocol", "seed", "bits", "alpha"]
    done = points[points["cached"]]
    if done.empty:
        return pd.DataFrame(columns=keys + ["folds", "f1_mean", "f1_std", "new"])
    return (done.groupby(keys, dropna=False, sort=False)
            .agg(folds=("fold", "nunique"), f1_mean=("f1_macro", "mean"), f1_std=("f1_macro", "std"),
                 new=("new", "sum")).reset_index())

"""Streamlit glue for background sweeps: the controls that start one, a panel that follows it (progress, ETA,
cancel) and redraws the page's curves as its runs land, and the curves themselves, new points marked.

The Alpha sweep, Bit-width and Run experiment pages call these; the work is `qmoe.experiments.sweep` (what a sweep
is, its points) and `qmoe.experiments.jobs` (the one background process that computes them).
"""
from __future__ import annotations

import json
import math
from typing import Callable

import pandas as pd
import streamlit as st

from ..core.errors import ConfigError, QmoeError
from ..experiments import jobs
from .ui import store_state

POLL_S = 2.0  # how often a page follows a running job
NEW = "new: computed by this sweep"
NEW_MARKER = dict(symbol="star", size=16, color="crimson", line=dict(width=1, color="black"))
YES_NO = {"yes": True, "no": False}


# -- reading the controls ----------------------------------------------------------------------------------------
def parse_values(text: str, kind=float, name: str = "values") -> list:
    """'0.05, 0.5 0.7' -> [0.05, 0.5, 0.7]; ConfigError naming the bad entry."""
    out = []
    for part in text.replace(",", " ").split():
        try:
            value = kind(part)
        except ValueError:
            raise ConfigError(f"{name}: {part!r} is not a{'n integer' if kind is int else ' number'}") from None
        if kind is float and not math.isfinite(value):
            raise ConfigError(f"{name}: {part!r} is not a finite number")
        out.append(value)
    return list(dict.fromkeys(out))


def moe_bases() -> list[str]:
    """MoE variants a sweep can start from: the paper's MoE-C at any alpha first, then the other registered MoEs."""
    from ..models.moe import _CURIOUS
    from ..models.registry import get_variant, list_variants

    plain = [v for v in list_variants() if get_variant(v).family == "moe" and v.split("@")[0] not in _CURIOUS]
    return list(_CURIOUS) + plain


def _base_options(base: str) -> dict:
    from ..models.moe import _CURIOUS, MOE_PART_DEFAULTS
    from ..models.registry import get_variant

    spec = get_variant(f"{base}@0.3" if base in _CURIOUS else base)
    return {k: spec.options.get(k, v) for k, v in MOE_PART_DEFAULTS.items()}


def moe_option_inputs(base: str | None, key: str) -> Callable[[], dict]:
    """Inputs for the MoE options other than alpha, prefilled with `base`'s own values (the paper's MoE-C recipe
    when None). Returns a function that reads them (so a bad entry is reported when the sweep starts, not while
    typing): only the options changed from `base`'s, as {option: [values]}, since an unchanged option stays out
    of the run's name and the points the grid cached are found again."""
    from ..models.moe import MOE_PART_DEFAULTS

    own = _base_options(base) if base else {**MOE_PART_DEFAULTS, "bayesian": True}
    c = st.columns(3)
    temperature = c[0].text_input("Temperatures T", f"{own['temperature']:g}", key=f"{key}-T")
    top_k = c[1].text_input("top-k", str(own["top_k"]), key=f"{key}-k")
    mc = c[2].text_input("MC dropout passes", str(own["mc_samples"]), key=f"{key}-mc")
    bayesian = c[0].multiselect("Bayesian router (MC-dropout mean)", list(YES_NO),
                                ["yes" if own["bayesian"] else "no"], key=f"{key}-b")
    mode = c[1].multiselect("Curiosity mode", ["paper", "reference-main", "reference-rebuttal"],
                            [own["curiosity_mode"]], key=f"{key}-cm",
                            help="paper: Eq. 8; reference-*: the authors' code (a no-op, see Learn)")
    in_training = c[2].multiselect("Curiosity in training too", list(YES_NO),
                                   ["yes" if own["curiosity_in_training"] else "no"], key=f"{key}-it")

    def read() -> dict:
        picked = {"temperature": parse_values(temperature, float, "temperature"),
                  "top_k": parse_values(top_k, int, "top-k"), "mc_samples": parse_values(mc, int, "MC passes"),
                  "bayesian": [YES_NO[v] for v in bayesian], "curiosity_mode": list(mode),
                  "curiosity_in_training": [YES_NO[v] for v in in_training]}
        if empty := [k.replace("_", " ") for k, v in picked.items() if not v]:
            raise ConfigError(f"give at least one value for {', '.join(empty)}")
        return {k: v for k, v in picked.items() if v != [own[k]]}

    return read


def fold_and_seed_inputs(dataset: str, protocol: str, key: str) -> Callable[[], tuple[list[int] | None, list[int]]]:
    """Folds (none picked: all) and seeds of a sweep; returns a function that reads them."""
    from .ui import dataset as cached_dataset

    c = st.columns(2)
    try:
        options = list(cached_dataset(dataset).fold_ids(protocol))
    except QmoeError as e:  # e.g. a folder dataset whose runs are cached but whose clips are not on this machine
        st.warning(f"Cannot sweep {dataset} here: {e}")
        options = []
    folds = c[0].multiselect("Folds (none picked = all)", options, key=f"{key}-folds")
    seeds = c[1].text_input("Seeds", "0", key=f"{key}-seeds")
    return lambda: (sorted(folds) or None, parse_values(seeds, int, "seeds") or [0])


def start(make_sweep: Callable[[], object]) -> None:
    """Build the sweep (`make_sweep` may raise ConfigError on a bad input) and start it as the background job; any
    refusal is shown, nothing is lost. On success the page reruns and follows the job."""
    from ..experiments.sweep import Sweep

    try:
        sweep = make_sweep()
        sweep = sweep if isinstance(sweep, Sweep) else Sweep(**sweep)
        jobs.start_sweep(sweep)
    except jobs.RunInProgress as e:
        st.error(str(e))
    except QmoeError as e:
        st.error(f"Cannot start this sweep: {e}")
    else:
        st.rerun()


# -- following the job --------------------------------------------------------------------------------------------
def _clock(seconds) -> str:
    if seconds is None:
        return "estimating..."
    seconds = int(round(seconds))
    return f"{seconds // 60}:{seconds % 60:02d}"


def job_panel(key: str, draw: Callable[[dict | None], None] | None = None, idle: str | None = None) -> None:
    """The running job's progress (runs done, computed vs read from the cache, ETA) with a Cancel button, or the
    last job's outcome; then `draw(job)` (the page's curves, given the running or last job). While a job runs, all
    of it reruns every POLL_S seconds, so the curves fill in as runs land; when it ends, the page redraws at rest.
    `idle`: a note shown when no job ever ran."""
    running = jobs.current_run() is not None

    @st.fragment(run_every=POLL_S if running else None)
    def panel():
        info = jobs.progress()
        last = None if info is not None else jobs.last_run()
        if info is not None:
            new = (f" ({info['new_done']}/{info['new_total']} computed, the rest read from the cache)"
                   if info.get("new_total") is not None else "")
            st.progress(min(1.0, info["fraction"]),
                        text=f"**{info.get('status', 'running')}** · {info.get('what', 'a job')}: "
                             f"{info.get('done', 0)}/{info.get('total') or '?'} runs{new} · "
                             f"ETA {_clock(info.get('eta_s'))} · elapsed {_clock(info.get('elapsed_s') or 0)} · "
                             f"{info.get('current', '')}")
            st.button("Cancel the job", key=f"{key}-cancel", on_click=jobs.cancel,
                      help="stops it at once: the runs in flight are dropped, the finished ones stay cached")
        elif running:
            st.rerun()  # it just ended: the whole page redraws, no longer polling
        elif last is not None:
            show = {"done": st.success, "cancelled": st.warning}.get(last.get("status"), st.error)
            show(f"Last job ({last.get('what') or ', '.join(last.get('spec', {}).get('variants', []))}; "
                 f"{last.get('status')}, finished {last.get('finished')}): {last.get('message')}")
        elif idle:
            st.info(idle)
        if draw is not None:
            draw(info or last)

    panel()


@st.cache_data(max_entries=8, show_spinner=False)
def _points(sweep_json: str, since: str | None, state: tuple) -> tuple[pd.DataFrame, pd.DataFrame]:
    from ..analysis.explain import sweep_curve
    from ..experiments.sweep import points_frame

    points = points_frame(json.loads(sweep_json), since=since)
    return points, sweep_curve(points)


def job_points(job: dict | None) -> tuple[pd.DataFrame, pd.DataFrame] | None:
    """(points, curve) of `job`'s sweep as cached now: `new` marks what the job computed; None for another job."""
    spec = (job or {}).get("spec") or {}
    if spec.get("kind") != "sweep":
        return None
    return _points(json.dumps(spec["sweep"], sort_keys=True), job.get("started"), store_state())


def series_label(curve: pd.DataFrame, x: str) -> pd.Series:
    """One curve per setting: the base (against bits: every Q<k>-Base on one line), plus the swept values (other
    than x) that differ between its rows."""
    varying = [c for c in ("task", "protocol", "seed", "temperature", "top_k", "mc_samples", "bayesian",
                           "curiosity_mode", "curiosity_in_training", "options" if x == "bits" else None)
               if c and c in curve and curve[c].astype(str).nunique() > 1]
    from ..analysis.tables import is_bitlinear

    def base(r) -> str:  # against bits, the Q<k>-Base points are one line
        return "BitLinear k-bit" if x == "bits" and is_bitlinear(str(r["base"])) else str(r["base"])

    return curve.apply(lambda r: " ".join([base(r)] + [f"{c}={r[c]}" for c in varying]), axis=1)


def curve_figure(curve: pd.DataFrame, x: str, y: str, yerr: str | None = None, title: str = "",
                 reference: pd.DataFrame | None = None, reference_name: str = "cached grid", log_x: bool = False):
    """`y` against `x`: one line per series of the sweep, its new points overlaid as stars (NEW); `reference`
    (rows with x, y, yerr) drawn first as grey points, e.g. the grid's cached sweep."""
    import plotly.graph_objects as go

    def error(d):
        return dict(type="data", array=d[yerr].fillna(0), visible=True) if yerr and yerr in d else None

    fig = go.Figure()
    if reference is not None and not reference.empty and y in reference:
        fig.add_trace(go.Scatter(x=reference[x], y=reference[y], mode="markers", name=reference_name,
                                 marker=dict(color="lightgrey", size=11), error_y=error(reference)))
    curve = curve.dropna(subset=[y]).sort_values(x)
    if not curve.empty:
        for label, part in curve.groupby(series_label(curve, x), sort=False):
            fig.add_trace(go.Scatter(x=part[x], y=part[y], mode="lines+markers", name=f"this sweep: {label}",
                                     error_y=error(part)))
        new = curve[curve["new"]]
        if not new.empty:
            fig.add_trace(go.Scatter(x=new[x], y=new[y], mode="markers", name=NEW, marker=NEW_MARKER))
    fig.update_layout(title=title, height=340, margin=dict(l=10, r=10, t=40, b=10), xaxis_title=x,
                      xaxis_type="log" if log_x else None, legend=dict(orientation="h", y=-0.25))
    return fig


def new_points_note(curve: pd.DataFrame, x: str) -> None:
    """The new points in words (what the stars are), under the charts."""
    new = curve[curve["new"]].sort_values(x)
    if new.empty:
        st.caption("No point of this sweep was computed by it: every one was read from the cache.")
        return
    label = lambda r: r["base"] if pd.isna(r[x]) else f"{x} = {r[x]:g}"  # noqa: E731
    st.markdown("**New points** (computed by this sweep, stars on the charts): " + "; ".join(
        f"{label(r)} · F1 {r.f1_mean:.3f} ({int(r.folds)} fold{'s' * (r.folds > 1)})" for _, r in new.iterrows()))

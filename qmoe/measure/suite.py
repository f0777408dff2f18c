"""Every figure of one trained model, as the columns of its results row: latency (`timing`), peak RAM (`ram`) and
energy (`energy`), taken one process at a time under the machine's measurement lock (`exclusive`).
"""
from __future__ import annotations

from contextlib import contextmanager
from pathlib import Path

from torch import nn

from ..core import paths
from .ram import peak_rss
from .timing import DEFAULT_ROUNDS, DEFAULT_THREADS, _as_inputs, latency, model_bytes, param_count, runtime_of


@contextmanager
def exclusive(lock_path: Path | None = None):
    """Hold the machine's measurement lock: one process times at a time (two timing processes on a
    2-core machine disturb each other; a training process beside a timing one disturbs it much less)."""
    import fcntl

    path = Path(lock_path or paths.CACHE_DIR / "measure.lock")
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)

MEASURED = ("latency_ms_mean", "latency_ms_std", "latency_ms_p50", "latency_ms_p99", "latency_n",
            "batch_latency_ms_mean", "batch_size", "batch_latency_per_sample_ms", "peak_rss_mb", "baseline_rss_mb",
            "model_rss_mb", "energy_mj", "co2_ug", "energy_method", "g_co2_per_kwh", "onnx_bytes", "machine")


def measure_model(model, x, *, runtime: str | None = None, batch_size: int = 64, rounds: int = DEFAULT_ROUNDS,
                  threads: int = DEFAULT_THREADS, rss: bool = True, energy: bool = True,
                  energy_seconds: float = 2.0) -> dict:
    """The measurement columns of a results row (see `qmoe.experiments.results.COLUMNS`), for a trained model.

    `runtime` ("onnxruntime", "torch-eager"): measure the engine model `model` as that runtime runs it
    (`qmoe.deploy.runtime.load`); None: measure `model` as given (a runtime model, or a module as is).
    Latency per sample (batch 1 over the rows of `x`) and batched; peak RAM in a fresh subprocess
    (`rss=False` skips it); inference energy per sample with codecarbon (`energy=False` skips it).
    """
    x = _as_inputs(x)
    target = model
    if runtime is not None:
        from ..deploy.runtime import load

        target = load(model, runtime, threads)
    single = latency(target, x, batch_size=1, rounds=rounds, threads=threads)
    batched = latency(target, x, batch_size=min(batch_size, len(x)), rounds=rounds, threads=threads)
    row = {
        "runtime": runtime_of(target),
        "latency_ms_mean": single.mean_ms, "latency_ms_std": single.std_ms,
        "latency_ms_p50": single.p50_ms, "latency_ms_p99": single.p99_ms, "latency_n": single.n,
        "batch_latency_ms_mean": batched.mean_ms, "batch_size": batched.batch_size,
        "batch_latency_per_sample_ms": batched.per_item_ms,
        "machine": single.machine,
        "latency_timings_ms": single.timings_ms,  # (rounds, samples) array: the caller stores it beside the record
    }
    if isinstance(model, nn.Module):
        row.update(params=param_count(model), model_bytes=model_bytes(model))
    if row["runtime"] == "onnxruntime":
        row["onnx_bytes"] = target.nbytes
    if rss:
        row.update(peak_rss(target, x, threads=threads))
    if energy:
        from .energy import inference_energy

        rec = inference_energy(target, x, threads=threads, min_seconds=energy_seconds)
        row.update({"energy_mj": rec.energy_per_item_mj, "co2_ug": rec.co2_per_item_ug,
                    "energy_method": rec.energy_method, "g_co2_per_kwh": rec.g_per_kwh})
    return row

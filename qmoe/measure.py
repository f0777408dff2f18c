"""Measuring a model the same way whatever it is: latency, peak RAM, parameters, bytes, machine.

One latency harness serves single models and MoE alike, so MoE overhead and the latency variance
that data-dependent routing causes (the paper's Eq. 9) are measured, not assumed: per-sample mode
times batch-1 calls over *distinct real samples* (a repeated sample would always take the same
route) and keeps every call's time. Every figure carries `machine_info()`, since a latency means
nothing without the CPU, thread count and torch version it was taken on.
"""
from __future__ import annotations

import gc
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

import numpy as np
import torch
from torch import nn

from . import paths
from .errors import ConfigError, DataError

DEFAULT_THREADS = 1  # one core: an edge-like, repeatable setting on a shared 2-core machine
DEFAULT_ROUNDS = 5
DEFAULT_WARMUP = 20
RSS_TIMEOUT_S = 300


# ---------------------------------------------------------------------------------------------
# Machine


@lru_cache(maxsize=1)
def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    if sys.platform == "darwin":
        try:
            return subprocess.run(["sysctl", "-n", "machdep.cpu.brand_string"], capture_output=True,
                                  text=True, timeout=5).stdout.strip()
        except Exception:
            pass
    return platform.processor() or platform.machine() or "unknown"


def machine_info(threads: int | None = None) -> dict:
    """What a figure was measured on: CPU model, cores, threads used, torch version, OS."""
    import psutil

    return {
        "cpu_model": _cpu_model(),
        "physical_cores": psutil.cpu_count(logical=False),
        "logical_cpus": psutil.cpu_count(logical=True),
        "threads": int(threads if threads is not None else torch.get_num_threads()),
        "ram_gb": round(psutil.virtual_memory().total / 2**30, 1),
        "torch": torch.__version__,
        "quantized_engine": torch.backends.quantized.engine,
        "python": platform.python_version(),
        "os": platform.platform(),
    }


def machine_label(info: dict) -> str:
    """One line for a figure caption."""
    return (f"{info['cpu_model']}, {info['threads']} thread(s) of {info['logical_cpus']} CPUs, "
            f"torch {info['torch']}, {info['os']}")


# ---------------------------------------------------------------------------------------------
# Size


def _packed_tensors(model: nn.Module):
    """Tensors a dynamically quantized Linear hides in a tuple of its state dict."""
    for v in model.state_dict().values():
        if isinstance(v, tuple):
            yield from (t for t in v if torch.is_tensor(t))


def param_count(model: nn.Module) -> int:
    """Learned numbers in the model, including int8 weights packed by post-training quantization."""
    seen = {id(p): p.numel() for p in model.parameters()}
    return int(sum(seen.values()) + sum(t.numel() for t in _packed_tensors(model)))


def state_dict_bytes(model: nn.Module) -> int:
    """Bytes of every tensor the model stores, at the dtype it stores them (int8 packed weights: 1 byte)."""
    total = 0
    for v in model.state_dict().values():
        tensors = v if isinstance(v, tuple) else (v,)
        total += sum(t.numel() * t.element_size() for t in tensors if torch.is_tensor(t))
    return int(total)


def model_bytes(model: nn.Module) -> int:
    """Deployable size: `model.packed().nbytes` when the model can pack itself, else its state dict.

    Quantization-aware models simulate k-bit weights in float32, so only `packed()` shows the
    saving; the state-dict fallback is honest about what is actually stored.
    """
    if hasattr(model, "packed"):
        nbytes = getattr(model.packed(), "nbytes", None)
        if nbytes is not None:
            return int(nbytes)
    return state_dict_bytes(model)


# ---------------------------------------------------------------------------------------------
# Latency


@contextmanager
def torch_threads(n: int):
    """Run with `n` intra-op threads, then restore the previous setting."""
    if not isinstance(n, int) or n < 1:
        raise ConfigError(f"threads must be a positive integer, got {n!r}")
    old = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(old)


@contextmanager
def _eval_mode(model: nn.Module):
    was_training = model.training
    model.eval()
    try:
        yield
    finally:
        model.train(was_training)


def _as_inputs(x) -> np.ndarray:
    x = np.ascontiguousarray(x.detach().cpu().numpy() if torch.is_tensor(x) else np.asarray(x), dtype=np.float32)
    if x.ndim != 2 or x.shape[0] == 0 or x.shape[1] == 0:
        raise DataError(f"inputs must be a non-empty 2-D array (samples x features), got shape {tuple(x.shape)}")
    if not np.isfinite(x).all():
        raise DataError("inputs contain NaN or infinite values")
    return x


def runtime_of(model) -> str:
    """The runtime a model runs on: a runtime model says so; a bare nn.Module is torch eager."""
    return getattr(model, "runtime", "torch-eager")


@contextmanager
def running(model, threads: int):
    """Yield `run(x: ndarray)`: `model` ready to be called repeatedly (eval mode, inference mode, `threads`).

    `model` is a runtime model (`qmoe.deploy.runtime`: ONNX Runtime or torch eager, called on numpy arrays)
    or a bare nn.Module, which is timed as it is (torch eager, no packing).
    """
    if isinstance(model, nn.Module):
        with torch_threads(threads), _eval_mode(model), torch.inference_mode():
            yield lambda b: model(torch.from_numpy(b))
    else:
        with torch_threads(threads):
            yield model


@dataclass(frozen=True)
class LatencyResult:
    """Timings of one harness run. `timings_ms[r, j]`: round r, call j (call j = the same input every round)."""

    batch_size: int
    timings_ms: np.ndarray = field(repr=False)
    threads: int
    warmup: int
    machine: dict = field(repr=False)

    @property
    def mode(self) -> str:
        return "per-sample" if self.batch_size == 1 else "batched"

    @property
    def n(self) -> int:
        return int(self.timings_ms.size)

    @property
    def rounds(self) -> int:
        return int(self.timings_ms.shape[0])

    @property
    def mean_ms(self) -> float:
        return float(self.timings_ms.mean())

    @property
    def std_ms(self) -> float:
        return float(self.timings_ms.std(ddof=1)) if self.n > 1 else 0.0

    @property
    def p50_ms(self) -> float:
        return float(np.percentile(self.timings_ms, 50))

    @property
    def p99_ms(self) -> float:
        return float(np.percentile(self.timings_ms, 99))

    @property
    def per_item_ms(self) -> float:
        """Mean time per sample (for batched mode: the batch time divided by the batch size)."""
        return self.mean_ms / self.batch_size

    @property
    def call_median_ms(self) -> np.ndarray:
        """Median over rounds for each call: timer noise is damped, input-dependent cost (routing) stays."""
        return np.median(self.timings_ms, axis=0)

    def summary(self) -> dict:
        return {"mode": self.mode, "batch_size": self.batch_size, "n": self.n, "rounds": self.rounds,
                "warmup": self.warmup, "threads": self.threads, "mean_ms": self.mean_ms, "std_ms": self.std_ms,
                "p50_ms": self.p50_ms, "p99_ms": self.p99_ms, "per_item_ms": self.per_item_ms,
                "machine": self.machine}


def latency(model, x, *, batch_size: int = 1, rounds: int = DEFAULT_ROUNDS,
            warmup: int = DEFAULT_WARMUP, threads: int = DEFAULT_THREADS) -> LatencyResult:
    """Time `model` (a runtime model or an nn.Module, see `running`) on the rows of `x` (samples x features).

    batch_size 1: one call per distinct sample, so data-dependent routing shows in the spread.
    batch_size > 1: consecutive full batches (a trailing partial batch is not timed).
    Each round passes over all calls once; `warmup` untimed calls go first; the garbage
    collector is paused while timing; the thread count is restored afterwards.
    """
    x = _as_inputs(x)
    for name, v, lo in (("batch_size", batch_size, 1), ("rounds", rounds, 1), ("warmup", warmup, 0)):
        if not isinstance(v, int) or v < lo:
            raise ConfigError(f"{name} must be an integer >= {lo}, got {v!r}")
    if batch_size > len(x):
        raise ConfigError(f"batch_size {batch_size} is larger than the {len(x)} samples given")
    n_calls = len(x) // batch_size
    batches = [x[i * batch_size:(i + 1) * batch_size] for i in range(n_calls)]
    times = np.empty((rounds, n_calls), dtype=np.float64)
    clock = time.perf_counter_ns
    with running(model, threads) as run:
        for i in range(warmup):
            run(batches[i % n_calls])
        gc_was_enabled = gc.isenabled()
        gc.disable()
        try:
            for r in range(rounds):
                for j, b in enumerate(batches):
                    t0 = clock()
                    run(b)
                    times[r, j] = clock() - t0
        finally:
            if gc_was_enabled:
                gc.enable()
    return LatencyResult(batch_size, times / 1e6, threads, warmup, machine_info(threads))


# ---------------------------------------------------------------------------------------------
# Peak RAM (in a fresh process)

RSS_METHOD = ("peak resident set size (VmHWM) of a fresh Python process that imports the runtime (onnxruntime "
              "alone, or torch and qmoe for torch eager), loads the model and runs inference over the given samples; "
              "whole-process, as the paper's figure")


def _peak_rss_mb() -> float:
    """High-water RSS of this process (VmHWM, not ru_maxrss: on Linux ru_maxrss survives exec)."""
    from .deploy.runtime import _peak_rss_mb as peak

    return peak()


def _rss_child(spec_path: str) -> None:
    """Entry point of the torch-eager measuring subprocess: prints one JSON line."""
    spec = json.loads(Path(spec_path).read_text())
    import qmoe.variants  # noqa: F401  (registers the classes a pickled model refers to)

    torch.set_num_threads(spec["threads"])
    baseline = _peak_rss_mb()
    if spec["kind"] == "checkpoint":
        from qmoe.checkpoint import load

        model = load(spec["model"]).model
    else:
        model = torch.load(spec["model"], weights_only=False)  # our own file, written a moment ago
    model.eval()
    x = torch.from_numpy(np.load(spec["x"]))
    bs = spec["batch_size"]
    with torch.inference_mode():
        for i in range(0, len(x), bs):
            model(x[i:i + bs])
    print(json.dumps({"baseline_rss_mb": baseline, "peak_rss_mb": _peak_rss_mb()}))


def peak_rss(model, x, *, batch_size: int = 1, threads: int = DEFAULT_THREADS) -> dict:
    """Peak RAM of inference, measured in a fresh subprocess (see `RSS_METHOD`).

    `model` is an ONNX Runtime model (its ONNX file is handed to a process that imports onnxruntime only),
    a torch module or torch-eager runtime model (pickled to a temp dir), or a checkpoint path (loaded with
    `qmoe.checkpoint.load`, the app's own path). Returns `peak_rss_mb` (whole process, comparable to the
    paper), `baseline_rss_mb` (after imports, before the model) and their difference `model_rss_mb`.
    """
    x = _as_inputs(x)
    if not isinstance(batch_size, int) or batch_size < 1:
        raise ConfigError(f"batch_size must be a positive integer, got {batch_size!r}")
    entry = "from qmoe.measure import _rss_child as child"
    with tempfile.TemporaryDirectory(prefix="qmoe-rss-") as tmp:
        tmp = Path(tmp)
        if runtime_of(model) == "onnxruntime":
            kind, model_path, entry = "onnx", tmp / "model.onnx", "from qmoe.deploy.runtime import rss_child as child"
            model_path.write_bytes(model.onnx_bytes)
        elif isinstance(model, (str, Path)):
            kind, model_path = "checkpoint", Path(model)
        else:
            kind, model_path = "module", tmp / "model.pt"
            try:
                torch.save(getattr(model, "model", model), model_path)
            except Exception as e:
                raise ConfigError(f"cannot hand this model to a subprocess ({e}); pass a checkpoint path instead") from e
        np.save(tmp / "x.npy", x)
        spec = tmp / "spec.json"
        spec.write_text(json.dumps({"kind": kind, "model": str(model_path), "x": str(tmp / "x.npy"),
                                    "batch_size": batch_size, "threads": threads}))
        env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(paths.ROOT), os.environ.get("PYTHONPATH", "")])}
        proc = subprocess.run([sys.executable, "-c", f"import sys; {entry}; child(sys.argv[1])", str(spec)],
                              capture_output=True, text=True, env=env, timeout=RSS_TIMEOUT_S)
    if proc.returncode != 0:
        tail = proc.stderr.strip().splitlines()[-1:] or ["no error output"]
        raise DataError(f"peak-RAM subprocess failed: {tail[0]}")
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    out["model_rss_mb"] = out["peak_rss_mb"] - out["baseline_rss_mb"]
    out["rss_method"] = RSS_METHOD
    return out


# ---------------------------------------------------------------------------------------------
# Everything for one trained model


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
    """The measurement columns of a results row (see `qmoe.results.COLUMNS`), for a trained model.

    `runtime` ("onnxruntime", "torch-eager"): measure the engine model `model` as that runtime runs it
    (`qmoe.deploy.runtime.load`); None: measure `model` as given (a runtime model, or a module as is).
    Latency per sample (batch 1 over the rows of `x`) and batched; peak RAM in a fresh subprocess
    (`rss=False` skips it); inference energy per sample with codecarbon (`energy=False` skips it).
    """
    x = _as_inputs(x)
    target = model
    if runtime is not None:
        from .deploy.runtime import load

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

"""Timing a model the same way whatever it is: latency, parameters, bytes, machine.

One latency harness serves single models and MoE alike, so MoE overhead and the latency variance
that data-dependent routing causes (the paper's Eq. 9) are measured, not assumed: per-sample mode
times batch-1 calls over *distinct real samples* (a repeated sample would always take the same
route) and keeps every call's time. Every figure carries `machine_info()`, since a latency means
nothing without the CPU, thread count and torch version it was taken on.
"""
from __future__ import annotations

import gc
import os
import platform
import subprocess
import sys
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

import numpy as np
import torch
from torch import nn

from ..core.errors import ConfigError, DataError

DEFAULT_THREADS = 1  # one core: an edge-like, repeatable setting on a shared 2-core machine
DEFAULT_ROUNDS = 5
DEFAULT_WARMUP = 20


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

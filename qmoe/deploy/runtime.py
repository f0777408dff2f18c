"""The runtimes a trained model runs on, each a callable `model(x: float32 (B, D)) -> logits (B, C)`.

- `onnxruntime` (default): the model exported to ONNX (`qmoe.deploy.export`) on ONNX Runtime's CPU provider,
  one intra-op thread, sequential execution: what a device runs, so every efficiency figure is taken here.
- `torch-eager`: the engine's packed PyTorch forward (`model.packed()`), kept to compare against.

Module level imports numpy only, so a fresh process measuring ONNX Runtime's RAM (`rss_child`) does not
carry torch.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np

from ..core.ort import session_options

RUNTIMES = {
    "onnxruntime": "ONNX Runtime, CPU provider, 1 intra-op thread, sequential (the exported ONNX graph)",
    "torch-eager": "PyTorch eager, the engine's packed forward (1 thread)",
}
DEFAULT_RUNTIME = "onnxruntime"


def check_runtime(name: str) -> str:
    if name not in RUNTIMES:
        from ..core.errors import ConfigError

        raise ConfigError(f"unknown runtime {name!r}; choose one of {', '.join(RUNTIMES)}")
    return name


class OnnxRuntimeModel:
    """An exported model on ONNX Runtime: the device graph (one clip per call, static shape) serves batch-1 calls,
    the any-batch graph the rest. `nbytes` / `onnx_bytes`: the device graph's ONNX file."""

    runtime = "onnxruntime"

    def __init__(self, onnx_bytes: bytes, batched_bytes: bytes | None = None, threads: int = 1):
        self.onnx_bytes, self.threads = bytes(onnx_bytes), threads
        self.session = self._session(self.onnx_bytes)
        self.batched = self._session(batched_bytes) if batched_bytes is not None else self.session
        self.input = self.session.get_inputs()[0].name
        self.outputs = [o.name for o in self.session.get_outputs()]
        self.single = self.session.get_inputs()[0].shape[0] == 1

    def _session(self, onnx_bytes: bytes):
        import onnxruntime as ort

        return ort.InferenceSession(bytes(onnx_bytes), session_options(self.threads), providers=["CPUExecutionProvider"])

    @property
    def nbytes(self) -> int:
        return len(self.onnx_bytes)

    def _for(self, x: np.ndarray):
        return self.session if len(x) == 1 or not self.single else self.batched

    def __call__(self, x: np.ndarray) -> np.ndarray:
        return self._for(x).run(["logits"], {self.input: x})[0]

    def run_all(self, x: np.ndarray) -> dict[str, np.ndarray]:
        return dict(zip(self.outputs, self._for(x).run(None, {self.input: x})))

    def save(self, path) -> Path:
        from ..core.cache import atomic_write_bytes

        atomic_write_bytes(Path(path), self.onnx_bytes)
        return Path(path)


class TorchEagerModel:
    """The engine's packed model in PyTorch eager mode, called like the ONNX Runtime model."""

    runtime = "torch-eager"

    def __init__(self, model, threads: int = 1):
        self.model = model.packed() if hasattr(model, "packed") else model
        self.model.eval()
        self.threads = threads

    @property
    def nbytes(self) -> int:
        return int(self.model.nbytes)  # every packed engine form counts its stored bytes

    def __call__(self, x: np.ndarray) -> np.ndarray:
        import torch

        with torch.inference_mode():
            return self.model(torch.from_numpy(x)).float().numpy()


def load(model, runtime: str = DEFAULT_RUNTIME, threads: int = 1, explain: bool = False):
    """A trained engine model (after `after_training()`) ready to run on `runtime`. ONNX Runtime gets the device
    graph (batch 1) and the any-batch graph; `explain=True` one any-batch graph with the MoE's routing outputs."""
    if check_runtime(runtime) == "torch-eager":
        return TorchEagerModel(model, threads)
    from .export import export

    if explain:
        return OnnxRuntimeModel(export(model, explain=True).SerializeToString(), threads=threads)
    return OnnxRuntimeModel(export(model, batch=1).SerializeToString(), export(model).SerializeToString(), threads)


def _peak_rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    import resource

    ru = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return ru / 2**20 if sys.platform == "darwin" else ru / 1024


def rss_child(spec_path: str) -> None:
    """Entry of the fresh process that measures ONNX Runtime's peak RAM: numpy + onnxruntime only, no torch."""
    spec = json.loads(Path(spec_path).read_text())
    import onnxruntime  # noqa: F401  (part of the baseline, as an app's import would be)

    baseline = _peak_rss_mb()
    model = OnnxRuntimeModel(Path(spec["model"]).read_bytes(), threads=spec["threads"])
    x = np.load(spec["x"])
    bs = spec["batch_size"]
    for i in range(0, len(x), bs):
        model(x[i:i + bs])
    print(json.dumps({"baseline_rss_mb": baseline, "peak_rss_mb": _peak_rss_mb(),
                      "torch_loaded": "torch" in sys.modules}))


def softmax(logits: np.ndarray) -> np.ndarray:
    """Class probabilities from logits along the last axis (shifted by the max, so large logits do not overflow)."""
    z = np.exp(logits - logits.max(-1, keepdims=True))
    return z / z.sum(-1, keepdims=True)


def parity(model, x: np.ndarray, deployed=None) -> dict:
    """How closely the ONNX Runtime export answers like the engine on the rows of `x` (standardized embeddings).

    agreement: share of rows with the same predicted class; max_prob_diff: largest |class probability difference|.
    `deployed`: an already loaded ONNX Runtime model of `model` (else exported here).
    """
    x = np.ascontiguousarray(x, dtype=np.float32)
    engine = softmax(TorchEagerModel(model)(x).astype(np.float64))
    onnx = softmax((deployed or load(model, "onnxruntime"))(x).astype(np.float64))
    return {"agreement": float((engine.argmax(1) == onnx.argmax(1)).mean()),
            "max_prob_diff": float(np.abs(engine - onnx).max()), "n": int(len(x))}

"""Peak RAM of inference, measured in a fresh process that holds only the runtime, the model and the samples.

ONNX Runtime models are measured in a process that imports onnxruntime alone (`qmoe.deploy.runtime.rss_child`);
torch modules and checkpoints in one that imports torch and qmoe (`_rss_child`).
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch

from ..core import paths
from ..core.errors import ConfigError, DataError
from .timing import DEFAULT_THREADS, _as_inputs, runtime_of

RSS_TIMEOUT_S = 300

RSS_METHOD = ("peak resident set size (VmHWM) of a fresh Python process that imports the runtime (onnxruntime "
              "alone, or torch and qmoe for torch eager), loads the model and runs inference over the given samples; "
              "whole-process, as the paper's figure")


def _peak_rss_mb() -> float:
    """High-water RSS of this process (VmHWM, not ru_maxrss: on Linux ru_maxrss survives exec)."""
    from ..deploy.runtime import _peak_rss_mb as peak

    return peak()


def _rss_child(spec_path: str) -> None:
    """Entry point of the torch-eager measuring subprocess: prints one JSON line."""
    spec = json.loads(Path(spec_path).read_text())
    import qmoe.models  # noqa: F401  (registers the classes a pickled model refers to)

    torch.set_num_threads(spec["threads"])
    baseline = _peak_rss_mb()
    if spec["kind"] == "checkpoint":
        from qmoe.models.checkpoint import load

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
    `qmoe.models.checkpoint.load`, the app's own path). Returns `peak_rss_mb` (whole process, comparable to the
    paper), `baseline_rss_mb` (after imports, before the model) and their difference `model_rss_mb`.
    """
    x = _as_inputs(x)
    if not isinstance(batch_size, int) or batch_size < 1:
        raise ConfigError(f"batch_size must be a positive integer, got {batch_size!r}")
    entry = "from qmoe.measure.ram import _rss_child as child"
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

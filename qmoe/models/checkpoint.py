"""Trained models on disk: safetensors weights + a JSON sidecar, loaded safely (no pickle).

A checkpoint stores the trained weights before any post-training step (e.g. int8 PTQ), plus the
standardizer fitted on the training folds; loading rebuilds the variant from the registry and
re-applies `after_training()`, which is deterministic.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from ..core.cache import atomic_write_bytes
from ..core.errors import CacheError
from .registry import create_model


@dataclass
class TrainedModel:
    variant: str
    model: torch.nn.Module  # deployable (after_training applied), eval mode
    mean: np.ndarray
    scale: np.ndarray
    class_names: list[str]
    info: dict

    def standardize(self, X: np.ndarray) -> np.ndarray:
        return ((np.atleast_2d(X) - self.mean) / self.scale).astype(np.float32)

    @torch.no_grad()
    def predict_proba(self, X: np.ndarray) -> np.ndarray:
        logits = self.model(torch.as_tensor(self.standardize(X)))
        return torch.softmax(logits.float(), -1).numpy()


def save(model: torch.nn.Module, path, variant: str, in_dim: int, n_classes: int, mean: np.ndarray,
         scale: np.ndarray, info: dict) -> Path:
    path = Path(path).with_suffix(".safetensors")
    path.parent.mkdir(parents=True, exist_ok=True)
    tensors = {k: v.detach().contiguous().clone() for k, v in model.state_dict().items()}
    tensors["__standardize_mean"] = torch.as_tensor(mean)
    tensors["__standardize_scale"] = torch.as_tensor(scale)
    tmp = path.with_name(".tmp-" + path.name)
    save_file(tensors, str(tmp))
    tmp.chmod(0o644)
    tmp.replace(path)
    meta = {"variant": variant, "in_dim": in_dim, "n_classes": n_classes, **info}
    atomic_write_bytes(path.with_suffix(".json"), json.dumps(meta, indent=1, sort_keys=True, default=str).encode())
    return path


def load(path) -> TrainedModel:
    path = Path(path).with_suffix(".safetensors")
    try:
        meta = json.loads(path.with_suffix(".json").read_text())
        tensors = load_file(str(path))
    except FileNotFoundError as e:
        raise CacheError(f"model file missing: {e.filename}") from e
    except Exception as e:
        raise CacheError(f"model {path.name} is unreadable ({e}); retrain it with `python -m qmoe ship`") from e
    mean = tensors.pop("__standardize_mean").numpy()
    scale = tensors.pop("__standardize_scale").numpy()
    options = meta.get("config", {}).get("options", {})
    model = create_model(meta["variant"], meta["in_dim"], meta["n_classes"], **options)
    model.load_state_dict(tensors)
    model.eval()
    if hasattr(model, "after_training"):
        model = model.after_training()
    model.eval()
    return TrainedModel(meta["variant"], model, mean, scale, meta["class_names"], meta)

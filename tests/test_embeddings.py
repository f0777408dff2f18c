"""The real backbone, offline: committed embeddings regenerate bit-for-bit; the cache is keyed right."""
import hashlib

import numpy as np
from PIL import Image

from qmoe.audio.backbones import get_backbone
from qmoe.audio.embeddings import embed_images, embedding_key
from qmoe.datasets.esc50 import PNG_RECIPE, embeddings_path, load_meta


def _first_batch(shared_esc50, n=32):
    names = load_meta()["name"][:n]
    files = [shared_esc50 / "mel-png" / f"{name}.png" for name in names]
    images = [np.array(Image.open(f).convert("RGB")) for f in files]
    return images, [hashlib.sha256(f.read_bytes()).hexdigest() for f in files]


def test_backbone_is_the_offline_imagenet_lite0():
    bb = get_backbone()
    assert bb.dim == 1280 and bb.weights_id.startswith("sha256:")
    assert not bb.model.training


def test_committed_embeddings_regenerate_bit_for_bit(shared_esc50, tmp_path):
    images, contents = _first_batch(shared_esc50)
    fresh = embed_images(images, contents, PNG_RECIPE, cache_dir=tmp_path, progress=False)
    committed = np.load(embeddings_path("efficientnet_lite0"))
    assert committed.shape == (2000, 1280) and committed.dtype == np.float16
    assert np.array_equal(fresh.astype(np.float16), committed[:32])


def test_embedding_cache_is_deterministic_and_keyed(shared_esc50, tmp_path):
    images, contents = _first_batch(shared_esc50, n=4)
    a = embed_images(images, contents, PNG_RECIPE, cache_dir=tmp_path, progress=False)
    assert len(list(tmp_path.rglob("*.npy"))) == 4
    b = embed_images(images, contents, PNG_RECIPE, cache_dir=tmp_path, progress=False)  # from the cache
    assert np.array_equal(a, b)
    bb = get_backbone()
    keys = {embedding_key(bb.name, bb.weights_id, r, contents[0]) for r in (PNG_RECIPE, "logmel")}
    assert len(keys) == 2  # another recipe is another cache entry
    # a corrupt cache file is recomputed, not used
    victim = sorted(tmp_path.rglob("*.npy"))[0]
    victim.write_bytes(b"garbage")
    c = embed_images(images, contents, PNG_RECIPE, cache_dir=tmp_path, progress=False)
    assert np.array_equal(a, c)

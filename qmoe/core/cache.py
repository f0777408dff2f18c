"""What every cache of qmoe is built from: atomic writes, config keys and the hash of the engine's sources.

The results cache (`qmoe.experiments.store`), the embedding cache (`qmoe.audio.embeddings`), the backbone and
model exports and the checkpoints all write through `atomic_write_bytes`, so a process killed at any moment
leaves the old file or the new one, never half a file.
"""
from __future__ import annotations

import hashlib
import json
import os
import subprocess
import tempfile
from functools import lru_cache
from pathlib import Path

from . import paths


def atomic_write_bytes(path: Path, data: bytes) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-", suffix=path.suffix)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)  # mkstemp makes 0600 files; cached results are meant to be shared
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def config_key(config: dict) -> str:
    """Stable key of a config: sha256 of its canonical JSON."""
    blob = json.dumps(config, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:20]


@lru_cache(maxsize=1)
def source_sha256() -> str:
    """A hash of the engine's sources (every qmoe/*.py, path and bytes): what a result or an export was made by."""
    h = hashlib.sha256()
    for f in sorted((paths.ROOT / "qmoe").rglob("*.py")):
        h.update(f.relative_to(paths.ROOT).as_posix().encode())
        h.update(f.read_bytes())
    return h.hexdigest()[:16]


@lru_cache(maxsize=1)
def code_version() -> dict:
    """The code that produced a result: git commit (if any) and a hash of the engine's sources."""
    commit = None
    try:
        commit = subprocess.run(["git", "rev-parse", "--short=12", "HEAD"], cwd=paths.ROOT, capture_output=True,
                                text=True, timeout=5).stdout.strip() or None
    except Exception:
        pass
    return {"source_sha256": source_sha256(), "git_commit": commit}

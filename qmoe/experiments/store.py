"""The results cache: one JSON record (+ optional arrays) per run, keyed by the run's full config.

Writes are atomic (temp file + os.replace), so a run killed at any moment leaves either the old
state or the new one, never half a file. An unreadable entry is moved to `quarantine/` with a
warning and recomputed; it is never silently used.
"""
from __future__ import annotations

import io
import json
import os
import warnings
from pathlib import Path

import numpy as np

from ..core import paths
from ..core.cache import atomic_write_bytes
from ..core.errors import CacheError


class ResultStore:
    """Runs under `root/runs/<key>.json` (record) and `root/runs/<key>.npz` (per-sample arrays)."""

    def __init__(self, root: Path | None = None):
        self.root = Path(root or paths.RESULTS_DIR)
        self.runs = self.root / "runs"

    def _json(self, key: str) -> Path:
        return self.runs / f"{key}.json"

    def _npz(self, key: str) -> Path:
        return self.runs / f"{key}.npz"

    def quarantine(self, path: Path, why: str) -> None:
        dest = self.root / "quarantine" / path.name
        dest.parent.mkdir(parents=True, exist_ok=True)
        os.replace(path, dest)
        warnings.warn(f"cache entry {path.name} was unreadable ({why}); moved to {dest} and will be recomputed")

    def get(self, key: str) -> dict | None:
        path = self._json(key)
        if not path.exists():
            return None
        try:
            record = json.loads(path.read_text())
            if record.get("key") != key:
                raise CacheError("key mismatch")
            return record
        except (json.JSONDecodeError, UnicodeDecodeError, CacheError, AttributeError) as e:
            self.quarantine(path, str(e))
            return None

    def put(self, key: str, record: dict, arrays: dict[str, np.ndarray] | None = None) -> None:
        record = {**record, "key": key}
        if arrays:  # arrays first: a record on disk always has its arrays
            buf = io.BytesIO()
            np.savez_compressed(buf, **arrays)
            atomic_write_bytes(self._npz(key), buf.getvalue())
            record["arrays"] = sorted(arrays)
        atomic_write_bytes(self._json(key), json.dumps(record, indent=1, sort_keys=True, default=_jsonable).encode())

    def arrays(self, key: str) -> dict[str, np.ndarray]:
        path = self._npz(key)
        try:
            with np.load(path, allow_pickle=False) as z:
                return {k: z[k] for k in z.files}
        except FileNotFoundError:
            return {}
        except Exception as e:
            self.quarantine(path, str(e))
            json_path = self._json(key)
            if json_path.exists():
                self.quarantine(json_path, "its arrays were unreadable")
            raise CacheError(f"arrays of run {key} were corrupt; the run was dropped and will be recomputed") from e

    def records(self) -> list[dict]:
        out = []
        for path in sorted(self.runs.glob("*.json")):
            rec = self.get(path.stem)
            if rec is not None:
                out.append(rec)
        return out


def _jsonable(o):
    if isinstance(o, (np.integer,)):
        return int(o)
    if isinstance(o, (np.floating,)):
        return float(o)
    if isinstance(o, np.ndarray):
        return o.tolist()
    return str(o)

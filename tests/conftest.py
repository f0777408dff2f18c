"""Shared fixtures. Tests never write into the repo's results/: each gets its own store."""
import os
import sys
from pathlib import Path

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):  # before numpy/torch load
    os.environ.setdefault(_var, "1")

import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("QMOE_CACHE", str(ROOT / ".cache"))  # embedding cache shared by the test session


@pytest.fixture
def store(tmp_path):
    from qmoe.experiments.store import ResultStore

    return ResultStore(tmp_path / "results")


@pytest.fixture(scope="session")
def esc50():
    from qmoe.datasets import get_dataset

    return get_dataset("esc50")


@pytest.fixture(scope="session")
def shared_esc50():
    from qmoe.core import paths

    d = paths.SHARED_DIR / "datasets" / "esc50"
    if not d.exists():
        pytest.fail(f"the shared ESC-50 data must sit beside the repo: {d} is missing")
    return d

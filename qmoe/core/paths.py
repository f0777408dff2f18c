"""Where things live. Every location can be moved with an environment variable (tests do)."""
import os
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]  # qmoe/core/paths.py -> the checkout
DATA_DIR = Path(os.environ.get("QMOE_DATA", ROOT / "data"))
RESULTS_DIR = Path(os.environ.get("QMOE_RESULTS", ROOT / "results"))
SHARED_DIR = Path(os.environ.get("QMOE_SHARED", ROOT.parent / "shared"))
CACHE_DIR = Path(os.environ.get("QMOE_CACHE", Path.home() / ".cache" / "qmoe"))
MODELS_DIR = DATA_DIR / "models"
EXAMPLES_DIR = DATA_DIR / "examples"

"""qmoe: curiosity-driven quantized Mixture-of-Experts for audio classification.

Audio -> mel-spectrogram figure -> ImageNet CNN embedding -> quantized MLP experts / MoE(-C).

Layers, lowest first (a module imports only its own layer and the ones below; tests/test_layers.py checks it):
core < audio < datasets < models < deploy < measure < experiments < analysis < app (and the CLI, `__main__`).
"""
import os

# One BLAS/OpenMP thread unless the user says otherwise: the models are small, and on a 2-core
# machine thread spinning made training ~20x slower under load. Takes effect if qmoe is imported
# before numpy/torch (app.py, the CLI and the tests do so).
for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, os.environ.get("QMOE_THREADS", "1"))

__version__ = "0.1.0"

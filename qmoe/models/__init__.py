"""The model zoo: quantized layers, experts, the Mixture-of-Experts and the registry that names them.

`quantizers` (k-bit, ternary and popcount layers, trained with straight-through estimators) -> `packing` (their
deployable integer form, whose bytes are counted) and `ptq` (int8 post-training quantization) -> `experts` (the single
MLP variants) and `routing` (router and Eqs. 5-8) -> `moe` (the MoE / MoE-C). `registry` names every variant
(`create_model`, `get_variant`, `list_variants`); `checkpoint` saves and loads trained models (safetensors).

Importing this package imports the model modules, which register their variants (as timm's `timm.models` does); the
registry imports none of them. May import the core only (never audio, datasets or anything above).
"""
from . import experts, moe  # noqa: F401  (they register their variants)
from .registry import create_model, get_variant, list_variants, register_family, register_variant

__all__ = ["create_model", "get_variant", "list_variants", "register_family", "register_variant"]

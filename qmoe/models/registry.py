"""The registry of named model variants, built by one factory (as timm does for its models).

A variant is a paper name (`FP32-Base`, `Q4-Base`, `BitNet-Q4/8-QMoE-C`, ...) bound to a builder
`builder(in_dim, n_classes, **options) -> nn.Module` and the training recipe the paper gives it.
Modules declare their variants with `@register_variant(...)`; `create_model` is the only factory.
This module imports none of them: `qmoe/models/__init__.py` imports the model modules (`experts`, `moe`), so
importing `qmoe.models` or any module in it (this one included) registers every variant, as timm's `timm.models`
does for its registry.

Model protocol the trainer relies on (all optional except forward):
- `forward(x) -> logits` of shape (batch, n_classes);
- `auxiliary_loss() -> Tensor`: added to the loss after a training forward (MoE load balance);
- `after_training() -> nn.Module`: called once training ends (post-training quantization);
- `packed() -> nn.Module` with an `nbytes` attribute: the deployable form whose bytes are counted;
- `routing_record(x) -> dict[str, ndarray]`: per-sample routing details (MoE only).
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field, asdict
from typing import Callable

from ..core.errors import ConfigError


@dataclass(frozen=True)
class TrainConfig:
    """Optimisation recipe. Defaults are the paper's single-model settings (Sec. 4.3)."""

    optimizer: str = "adamw"  # adamw | adam
    lr: float = 5.79e-4
    weight_decay: float = 5.13e-3
    batch_size: int = 64
    max_epochs: int = 200
    patience: int = 19
    grad_clip: float = 1.0
    class_weighted: bool = True
    label_smoothing: float = 0.0

    def to_dict(self) -> dict:
        return asdict(self)


MOE_TRAIN = TrainConfig(optimizer="adam", lr=1e-3, weight_decay=1e-4, batch_size=256, max_epochs=200, patience=30)


@dataclass(frozen=True)
class VariantSpec:
    name: str
    builder: Callable
    train: TrainConfig = TrainConfig()
    family: str = "single"  # single | moe
    bits: float | None = None  # weight bit-width for single models (ternary: 1.58)
    description: str = ""
    options: dict = field(default_factory=dict)  # fixed keyword arguments for the builder


_REGISTRY: dict[str, VariantSpec] = {}
_FAMILIES: list[tuple["re.Pattern", Callable, str]] = []  # (name pattern, match -> VariantSpec, example names)


def register_variant(name: str, *, train: TrainConfig = TrainConfig(), family: str = "single",
                     bits: float | None = None, description: str = "", **options):
    """Decorator: register `builder` under the paper name `name` (with fixed builder options)."""

    def deco(builder):
        if name in _REGISTRY:
            raise ConfigError(f"variant {name!r} registered twice")
        _REGISTRY[name] = VariantSpec(name, builder, train, family, bits,
                                      description or (builder.__doc__ or "").strip().split("\n")[0], options)
        return builder

    return deco


def register_family(pattern: str, examples: str):
    """Decorator: `make(match) -> VariantSpec` builds the spec of any name matching the regex `pattern` on demand
    (parametric variants such as `Q3-Base` or an MoE named by its parts). Exact registrations take precedence."""

    def deco(make):
        _FAMILIES.append((re.compile(pattern), make, examples))
        return make

    return deco


def list_variants(family: str | None = None) -> list[str]:
    return [n for n, s in _REGISTRY.items() if family is None or s.family == family]


def get_variant(name: str) -> VariantSpec:
    if name in _REGISTRY:
        return _REGISTRY[name]
    for pattern, make, _ in _FAMILIES:
        if isinstance(name, str) and (m := pattern.fullmatch(name)):
            return make(m)  # raises ConfigError with the reason when the name is well-formed but invalid
    known = ", ".join(sorted(_REGISTRY))
    families = "; ".join(examples for _, _, examples in _FAMILIES)
    raise ConfigError(f"unknown variant {name!r}; known variants: {known}" + (f"; and by pattern: {families}"
                                                                                 if families else ""))


def create_model(name: str, in_dim: int, n_classes: int, **overrides):
    """Build variant `name` for `in_dim`-d embeddings and `n_classes` classes."""
    if in_dim < 1 or n_classes < 2:
        raise ConfigError(f"need in_dim >= 1 and n_classes >= 2, got {in_dim}, {n_classes}")
    spec = get_variant(name)
    try:
        return spec.builder(in_dim, n_classes, **{**spec.options, **overrides})
    except TypeError as e:  # a misspelt or foreign option
        raise ConfigError(f"bad option for variant {name!r}: {e}") from e

"""Single-model experts: the paper's MLP on embeddings, in FP32 and in every quantized form.

Structure (reference `ESCModel` / `BitNetExpert`): per hidden layer Linear -> LayerNorm -> ReLU ->
Dropout, hidden [640, 320], dropout 0.195; the final classifier is a plain FP32 Linear in every
variant except Q8-Base-PTQ (whose int8 PTQ quantizes all Linears, as the reference's does).
The quantized variants swap the hidden Linears for a layer of `qmoe.models.quantizers`; `packed()` gives
the deployable form (`qmoe.models.packing`), whose `nbytes` is the true stored size.
"""
from __future__ import annotations

import functools

import torch
from torch import nn

from ..core.errors import ConfigError
from .packing import PackedMLP
from .ptq import PTQ_BACKENDS, quantize_int8
from .quantizers import KBIT_RANGE, BitLinear, PopcountLinear, TernaryLinear, check_bits, check_threshold
from .registry import VariantSpec, register_family, register_variant

__all__ = ["MLPExpert", "Int8PTQExpert", "BitLinear", "TernaryLinear", "PopcountLinear", "HIDDEN", "DROPOUT"]

HIDDEN = (640, 320)
DROPOUT = 0.195


class Dropout(nn.Dropout):
    """Inverted dropout (keep probability 1 - p, kept values scaled by 1 / (1 - p)), its mask drawn as uniform >= p.

    The same distribution as nn.Dropout, about 2.5x faster on CPU than torch's bernoulli_ mask (dropout was a tenth
    of an MoE training step). Still an nn.Dropout, so the packed/deployed forms drop it as before.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.p == 0:
            return x
        return x * torch.rand_like(x).ge_(self.p).mul_(1.0 / (1.0 - self.p))


class MLPExpert(nn.Module):
    """The paper's MLP: hidden [640, 320], LayerNorm, ReLU, dropout 0.195, FP32 classifier.

    `layer(in_features, out_features)` builds each hidden linear layer (nn.Linear for FP32).
    """

    def __init__(self, in_dim: int, n_classes: int, hidden=HIDDEN, dropout: float = DROPOUT, layer=nn.Linear):
        super().__init__()
        hidden = tuple(hidden)
        if not hidden or any(isinstance(h, bool) or not isinstance(h, int) or h < 1 for h in hidden):
            raise ConfigError(f"hidden must be a non-empty list of positive layer widths; got {hidden!r}")
        if not 0.0 <= dropout < 1.0:
            raise ConfigError(f"dropout must be in [0, 1); got {dropout!r}")
        blocks, d = [], in_dim
        for h in hidden:
            blocks += [layer(d, h), nn.LayerNorm(h), nn.ReLU(), Dropout(dropout)]
            d = h
        self.body = nn.Sequential(*blocks)
        self.head = nn.Linear(d, n_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.body(x))

    def packed(self) -> nn.Module:
        """Deployable form: quantized layers packed at their bit-width, the rest FP32."""
        return PackedMLP(self)


class Int8PTQExpert(MLPExpert):
    """FP32 MLP during training; int8 PTQ of its Linears once training ends (`qmoe.models.ptq`)."""

    def __init__(self, in_dim: int, n_classes: int, backend: str = "qmoe", per_sample: bool = True, **kw):
        if backend not in PTQ_BACKENDS:
            raise ConfigError(f"unknown PTQ backend {backend!r}; choose from {', '.join(PTQ_BACKENDS)}")
        super().__init__(in_dim, n_classes, **kw)
        self.backend, self.per_sample = backend, bool(per_sample)

    def after_training(self) -> nn.Module:
        return quantize_int8(self, self.backend, self.per_sample)

    def packed(self) -> nn.Module:
        return self.after_training()


def _kbit(in_dim: int, n_classes: int, width: int, **kw) -> MLPExpert:
    """A Qk-Base MLP; a `bits` option may only repeat the width its name fixes."""
    if "bits" in kw:
        asked = check_bits(kw.pop("bits"))
        if asked != width:
            raise ConfigError(f"Q{width}-Base is the {width}-bit variant; for bits={asked} use Q{asked}-Base")
    return MLPExpert(in_dim, n_classes, layer=lambda i, o: BitLinear(i, o, bits=width), **kw)


@register_variant("FP32-Base", bits=32)
def fp32_base(in_dim: int, n_classes: int, **kw) -> nn.Module:
    """Full-precision MLP (the paper's FP32 baseline)."""
    return MLPExpert(in_dim, n_classes, **kw)


@register_variant("Q1-Base", bits=1)
def q1_base(in_dim: int, n_classes: int, **kw) -> nn.Module:
    """MLP with 1-bit BitLinear hidden layers (QAT, STE).

    Eq. 2 has no scale at k = 1 (2^0 - 1 = 0): as the reference, weights are sign(W - mean W) with
    no scale (the LayerNorm after the layer absorbs it); an exact zero counts as +1.
    """
    return _kbit(in_dim, n_classes, 1, **kw)


@register_variant("Q2-Base", bits=2)
def q2_base(in_dim: int, n_classes: int, **kw) -> nn.Module:
    """MLP with 2-bit BitLinear hidden layers (QAT, STE): codes {-2, -1, 0, 1}, per-layer scale."""
    return _kbit(in_dim, n_classes, 2, **kw)


@register_variant("Q4-Base", bits=4)
def q4_base(in_dim: int, n_classes: int, **kw) -> nn.Module:
    """MLP with 4-bit BitLinear hidden layers, quantization-aware trained (STE)."""
    return _kbit(in_dim, n_classes, 4, **kw)


@register_variant("Q8-Base", bits=8)
def q8_base(in_dim: int, n_classes: int, **kw) -> nn.Module:
    """MLP with 8-bit BitLinear hidden layers (QAT, STE)."""
    return _kbit(in_dim, n_classes, 8, **kw)


@register_variant("Q16-Base", bits=16)
def q16_base(in_dim: int, n_classes: int, **kw) -> nn.Module:
    """MLP with 16-bit BitLinear hidden layers (QAT, STE): Eq. 2 with k = 16, int16 weight codes.

    The paper reports 16-bit quantization; the reference skips quantization for k >= 16 (a FP32
    MLP with input LayerNorms). qmoe quantizes for real: int16 weights, int8 activations as every
    BitLinear, stored as int16 (2 bytes per weight, the size of fp16; fp16 cannot hold every int16
    code exactly, hence int16).
    """
    return _kbit(in_dim, n_classes, 16, **kw)


@register_family(r"Q(?P<bits>[0-9]+)-Base", "Q<k>-Base for any k from 1 to 16 (Q3-Base, Q6-Base, Q12-Base, ...)")
def qk_base(match) -> VariantSpec:
    """Q<k>-Base at any integer width k (the paper's five are registered by name above; the rest are built here on
    demand, with the same recipe): a sweep over bit-widths needs every k, not only the paper's."""
    bits = int(match["bits"])
    if match["bits"] != str(bits):  # one name per model (names are part of the cache key)
        raise ConfigError(f"{match.string!r}: write it as 'Q{bits}-Base'")
    if bits not in KBIT_RANGE:
        raise ConfigError(f"{match.string!r}: a Qk-Base expert has k from {KBIT_RANGE.start} to {KBIT_RANGE.stop - 1} "
                          f"bits (Eq. 2 with int8 activations; above 16 bits use FP32-Base)")
    return VariantSpec(f"Q{bits}-Base", functools.partial(_kbit, width=bits), bits=bits,
                       description=f"MLP with {bits}-bit BitLinear hidden layers (QAT, STE): Eq. 2 with k = {bits}")


@register_variant("BitNet-Base", bits=1.58)
def bitnet_base(in_dim: int, n_classes: int, act_delta: float = 0.05, weight_delta: float = 0.15, **kw) -> nn.Module:
    """MLP with BitNet ternary hidden layers (Eq. 3, QAT, STE), ternary activations.

    Reference choices: weights centred per output row, threshold tau = 0.15 x mean|row|, per-row
    scale alpha = mean |w| over the non-zero codes; activations sign(x), zeroed below
    0.05 x mean|x|. The paper calls tau and alpha learned; like the reference, qmoe recomputes
    them from the weights at each step (alpha is then the least-squares scale for the codes).
    """
    check_threshold("act_delta", act_delta)
    check_threshold("weight_delta", weight_delta)
    return MLPExpert(in_dim, n_classes, layer=lambda i, o: TernaryLinear(i, o, act_delta, weight_delta), **kw)


@register_variant("Q8-Base-PTQ", bits=8)
def q8_base_ptq(in_dim: int, n_classes: int, backend: str = "qmoe", per_sample: bool = True, **kw) -> nn.Module:
    """FP32 MLP, int8 post-training quantization of all its Linears after training.

    The reference's `qesc` is torch's `quantize_dynamic(model, {nn.Linear}, qint8)`. qmoe quantizes the weights
    exactly as it does (per-tensor symmetric int8) and the activations per row (symmetric int8, as BitLinear), so
    a clip's answer never depends on its batch and ONNX Runtime runs it natively; `backend="torch.ao"` is torch's
    own dynamic quantization (per-tensor activations; `per_sample` runs each clip alone). See `qmoe.models.ptq`.
    """
    return Int8PTQExpert(in_dim, n_classes, backend=backend, per_sample=per_sample, **kw)


@register_variant("Popcount-Base", bits=1)
def popcount_base(in_dim: int, n_classes: int, tau: float = 0.05, **kw) -> nn.Module:
    """MLP whose hidden layers are Eq. 4: binarized inputs and weights (bit = value > 0.05),
    y = popcount(x_b XOR w_b) - d/2, deployed on packed bits with a real popcount.

    The reference's popcount layer has no gradient path (and encodes ternary values in 2 bits);
    qmoe follows Eq. 4 literally (1 bit per value), trains with an identity STE, and keeps the
    final classifier FP32 as in the other quantized experts.
    """
    check_threshold("tau", tau)
    return MLPExpert(in_dim, n_classes, layer=lambda i, o: PopcountLinear(i, o, tau), **kw)

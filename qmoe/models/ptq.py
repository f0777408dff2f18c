"""Int8 post-training quantization (Q8-Base-PTQ, the reference's `qesc`).

The reference quantizes its trained FP32 MLP with torch's `quantize_dynamic(model, {nn.Linear}, qint8)`: every
Linear (the classifier too) gets int8 weights with one per-tensor symmetric scale, and activations are quantized
on the fly, per tensor, asymmetric uint8 (7-bit on x86, where fbgemm reduces the range). LayerNorms stay FP32.

qmoe's default (`backend="qmoe"`) quantizes the weights exactly as torch does (min/max, per-tensor symmetric:
scale = max|W| / 127.5, codes = round(W / scale)) and the activations per row, symmetric int8, the rule its
BitLinear layers use (s_x = 127 / max|x|). Why per row rather than per tensor:
- one activation scale per input tensor makes a clip's answer depend on its batch-mates (standardized ESC-50
  embeddings reach |z| ~ 900 on test folds: one outlier flattens every other clip to a few levels);
- it is what ONNX Runtime runs natively (`MatMulInteger`), so the deployed model answers as the engine does;
- torch.ao.quantization is deprecated, and torchao's int8 ran 3-10x slower than FP32 on this CPU.
`backend="torch.ao"` keeps torch's own dynamic quantization (the reference's behaviour; `per_sample` runs each
clip alone) and `backend="torchao"` torchao's, for comparison.
"""
from __future__ import annotations

import copy
import warnings

import torch
from torch import nn

from ..core.errors import ConfigError
from .packing import PackedIntLinear, PackedMLP

PTQ_BACKENDS = ("qmoe", "torch.ao", "torchao")
QINT8_MIN, QINT8_MAX = -128, 127


@torch.no_grad()
def int8_weights(w: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """torch.ao's per-tensor symmetric int8 weight rule (MinMaxObserver, qint8): codes and scale."""
    span = torch.maximum(-w.min().clamp(max=0), w.max().clamp(min=0))
    scale = (span / ((QINT8_MAX - QINT8_MIN) / 2)).clamp(min=torch.finfo(torch.float32).eps)
    return torch.clamp(torch.round(w * (1.0 / scale)), QINT8_MIN, QINT8_MAX), scale


def int8_linear(linear: nn.Linear) -> PackedIntLinear:
    codes, scale = int8_weights(linear.weight)
    return PackedIntLinear(codes, scale, linear.bias, 8, norm=None)


def int8_ptq(model: nn.Module) -> PackedMLP:
    """qmoe's int8 PTQ of an MLP expert: every nn.Linear (the classifier too) with int8 weights, per-row int8
    activations; a deployable copy (the FP32 model is left untouched)."""
    packed = PackedMLP(model)
    packed.body = nn.Sequential(*[int8_linear(m) if type(m) is nn.Linear else m for m in packed.body])
    packed.head = int8_linear(packed.head)
    return packed.requires_grad_(False).eval()


# --- torch's own dynamic quantization (the reference's), kept for comparison -------------------------------

def _quantized_linear_bytes(module: nn.Module) -> int | None:
    """Stored bytes of a torch.ao dynamic int8 Linear: int8 weight + its scale/zero point + bias."""
    if not isinstance(module, torch.ao.nn.quantized.Linear):  # the dynamic Linear is a subclass
        return None
    weight, bias = module.weight(), module.bias()
    if weight.qscheme() in (torch.per_tensor_affine, torch.per_tensor_symmetric):
        qparams = 4 + 4  # float32 scale, int32 zero point
    else:
        qparams = weight.q_per_channel_scales().numel() * 8
    return weight.numel() + qparams + (bias.numel() * bias.element_size() if bias is not None else 0)


def _torchao_tensor_bytes(t: torch.Tensor) -> int:
    """Bytes of a torchao quantized tensor: the sum of its inner tensors (int8 data and scales)."""
    if hasattr(t, "__tensor_flatten__"):
        names, _ = t.__tensor_flatten__()
        return sum(_torchao_tensor_bytes(getattr(t, n)) for n in names)
    return t.numel() * t.element_size()


def quantized_nbytes(model: nn.Module) -> int:
    """True stored bytes of a torch.ao/torchao PTQ model: int8 Linears as int8 + quantization parameters."""
    total = 0
    for module in model.modules():
        q = _quantized_linear_bytes(module)
        if q is not None:
            total += q
            continue
        for t in list(module.parameters(recurse=False)) + list(module.buffers(recurse=False)):
            total += _torchao_tensor_bytes(t)
    return total


class Int8Model(nn.Module):
    """A model quantized by torch.ao or torchao (inference only). With `per_sample=True` each row runs alone,
    as a device classifies one clip at a time (torch.ao's one activation scale per tensor would otherwise couple
    the clips of a batch); `per_sample=False` is the reference's batched behaviour."""

    def __init__(self, quantized: nn.Module, backend: str, per_sample: bool = True):
        super().__init__()
        self.model, self.backend, self.per_sample = quantized, backend, per_sample

    @property
    def nbytes(self) -> int:
        return quantized_nbytes(self.model)

    def packed(self) -> nn.Module:
        return self

    def after_training(self) -> nn.Module:
        return self

    @torch.inference_mode()
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.per_sample and self.backend == "torch.ao" and len(x) > 1:
            return torch.cat([self.model(row) for row in x.split(1)])
        return self.model(x)


def quantize_int8(model: nn.Module, backend: str = "qmoe", per_sample: bool = True) -> nn.Module:
    """Int8 PTQ of a copy of `model` (the original is left untouched) with the named backend."""
    if backend not in PTQ_BACKENDS:
        raise ConfigError(f"unknown PTQ backend {backend!r}; choose from {', '.join(PTQ_BACKENDS)}")
    if backend == "qmoe":
        return int8_ptq(model)
    model = copy.deepcopy(model).eval().cpu()
    if backend == "torchao":
        from torchao.quantization import Int8DynamicActivationInt8WeightConfig, quantize_

        quantize_(model, Int8DynamicActivationInt8WeightConfig())
        return Int8Model(model, backend, per_sample)
    with warnings.catch_warnings():  # deprecated in favour of torchao (see the module docstring)
        warnings.filterwarnings("ignore", message=".*torch.ao.quantization is deprecated.*")
        warnings.filterwarnings("ignore", message=".*quantize_per_tensor.*")
        quantized = torch.ao.quantization.quantize_dynamic(model, {nn.Linear}, dtype=torch.qint8)
    return Int8Model(quantized, backend, per_sample)

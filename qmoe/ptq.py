"""Int8 post-training quantization (Q8-Base-PTQ, the reference's `qesc`).

The reference quantizes its trained FP32 MLP with `torch.quantization.quantize_dynamic(model,
{nn.Linear}, qint8)`: every Linear (the classifier too) gets int8 weights with one per-tensor scale
and int8 activations quantized on the fly; LayerNorms stay FP32. qmoe does the same through
`torch.ao.quantization.quantize_dynamic` with the default x86/fbgemm engine.

Why not torchao: PyTorch 2.15 deprecates `torch.ao.quantization` in favour of torchao, but on this
CPU (torch 2.14.1, torchao 0.18, no torchao C++ kernels for x86) torchao's
`Int8DynamicActivationInt8WeightConfig` runs the MLP ~10x slower than FP32 (and int8 weight-only
~3x slower), while `quantize_dynamic` is ~2x faster than FP32. `backend="torchao"` keeps the torchao
path available for comparison.
"""
from __future__ import annotations

import copy
import warnings

import torch
from torch import nn

from .errors import ConfigError

PTQ_BACKENDS = ("torch.ao", "torchao")


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
    """True stored bytes of a PTQ model: int8 Linears as int8 + quantization parameters, rest FP32."""
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
    """A post-training-quantized model: the deployable form of Q8-Base-PTQ (inference only).

    torch.ao's dynamic quantization uses ONE activation scale for the whole input tensor, so in a
    batch one outlying clip (standardized ESC-50 embeddings reach |z| ~ 900 on test folds) flattens
    every other clip's activations to a few levels: predictions would depend on which clips share a
    batch. With `per_sample=True` (default) each row is run alone, as a device classifies one clip
    at a time; `per_sample=False` is the reference's batched behaviour.
    """

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


def quantize_int8(model: nn.Module, backend: str = "torch.ao", per_sample: bool = True) -> Int8Model:
    """Dynamic int8 PTQ of every nn.Linear of a copy of `model` (the original is left untouched)."""
    if backend not in PTQ_BACKENDS:
        raise ConfigError(f"unknown PTQ backend {backend!r}; choose from {', '.join(PTQ_BACKENDS)}")
    model = copy.deepcopy(model).eval().cpu()
    if backend == "torchao":
        from torchao.quantization import Int8DynamicActivationInt8WeightConfig, quantize_

        quantize_(model, Int8DynamicActivationInt8WeightConfig())
        return Int8Model(model, backend, per_sample)
    with warnings.catch_warnings():  # deprecated in favour of torchao, which is slower here (see above)
        warnings.filterwarnings("ignore", message=".*torch.ao.quantization is deprecated.*")
        warnings.filterwarnings("ignore", message=".*quantize_per_tensor.*")
        quantized = torch.ao.quantization.quantize_dynamic(model, {nn.Linear}, dtype=torch.qint8)
    return Int8Model(quantized, backend, per_sample)

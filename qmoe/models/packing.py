"""Deployable experts: weights stored at their bit-width, a forward pass that runs on that storage.

The reference implementation only simulates low precision, so its sizes do not move with the
bit-width. Here each quantized layer becomes a packed module holding exactly what a device would
store: 1- to 7-bit codes packed into bytes as one little-endian bit stream per row (1, 2, 4 bits: 8/4/2
codes per byte; 3, 5, 6, 7 bits: 8 codes in 3, 5, 6, 7 bytes), ternary codes at 2 bits, int8 codes as such,
9- to 16-bit codes as int16 (2 bytes each: byte-aligned, as int16 kernels read them), popcount weights as bits
in 64-bit words; plus the FP32 scales, biases and LayerNorms. `nbytes` counts every stored tensor, nothing else.

Forward passes decode the codes (a few shifts and masks per byte) into the same integer-valued matrix
the fake-quant layer builds, so packed and fake-quant logits agree to float rounding. The
popcount layer never decodes: it XORs the packed bits and counts them (numpy's popcount ufunc).
"""
from __future__ import annotations

import copy

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from .quantizers import BitLinear, PopcountLinear, TernaryLinear, codes_product, int8_activations, ternary_activations

WORD_BITS = 64  # popcount operands are 64-bit words
POPCOUNT_CHUNK = 1 << 20  # words XORed at once in the popcount forward (bounds temporary memory)


def tensor_bytes(module: nn.Module) -> int:
    """Bytes of every parameter and buffer of `module` (each tensor counted once)."""
    seen, total = set(), 0
    for t in list(module.parameters()) + list(module.buffers()):
        if id(t) not in seen:
            seen.add(id(t))
            total += t.numel() * t.element_size()
    return total


# --- bit packing --------------------------------------------------------------------------------

def _check_pack_bits(bits: int) -> int:
    if isinstance(bits, bool) or not isinstance(bits, int) or not 1 <= bits <= 8:
        raise ValueError(f"can pack 1 to 8 bits per code into bytes, not {bits!r}")
    return bits


def pack_bits(codes: torch.Tensor, bits: int) -> torch.Tensor:
    """Pack unsigned integer codes (< 2^bits) along the last dim into uint8: one little-endian bit stream per row
    (code j at bits j*bits .. (j+1)*bits - 1), zero-padded to whole groups. For bits 1, 2, 4 a group is one byte of
    8 // bits codes; otherwise 8 codes in `bits` bytes (a 3-bit row of 8 codes: 3 bytes)."""
    _check_pack_bits(bits)
    if codes.numel() and (int(codes.min()) < 0 or int(codes.max()) >= 2 ** bits):  # ints: 2^8 overflows uint8
        raise ValueError(f"codes must lie in [0, {2 ** bits - 1}] to pack into {bits} bits")
    if 8 % bits == 0:
        per = 8 // bits
        codes = F.pad(codes.to(torch.uint8), (0, -codes.shape[-1] % per))
        groups = codes.reshape(*codes.shape[:-1], -1, per)
        shifts = torch.arange(per, dtype=torch.uint8) * bits
        return (groups << shifts).sum(-1).to(torch.uint8)  # the fields do not overlap: sum == OR
    codes = F.pad(codes.to(torch.int64), (0, -codes.shape[-1] % 8))
    words = (codes.reshape(*codes.shape[:-1], -1, 8) << (torch.arange(8) * bits)).sum(-1)  # 8 codes: < 2^56
    octets = (words.unsqueeze(-1) >> (torch.arange(bits) * 8)) & 0xFF
    return octets.reshape(*codes.shape[:-1], -1).to(torch.uint8)


def unpack_bits(packed: torch.Tensor, bits: int, n: int) -> torch.Tensor:
    """Inverse of `pack_bits`: the first `n` codes of the last dim, as uint8."""
    mask = 2 ** _check_pack_bits(bits) - 1
    if 8 % bits == 0:
        codes = torch.stack([(packed >> (i * bits)) & mask for i in range(8 // bits)], dim=-1)
        return codes.reshape(*packed.shape[:-1], -1)[..., :n]
    octets = packed.to(torch.int64).reshape(*packed.shape[:-1], -1, bits)
    words = (octets << (torch.arange(bits) * 8)).sum(-1)
    codes = (words.unsqueeze(-1) >> (torch.arange(8) * bits)) & mask
    return codes.reshape(*packed.shape[:-1], -1)[..., :n].to(torch.uint8)


def decode(packed: torch.Tensor, bits: int, n: int, step: float, offset: float) -> torch.Tensor:
    """Packed unsigned codes -> the float values `code * step - offset` (first `n` per row)."""
    return unpack_bits(packed, bits, n).float().mul_(step).sub_(offset)


def pack_signs(signs: torch.Tensor) -> np.ndarray:
    """+-1 rows -> bits (1 where +1) in little-endian uint64 words, zero-padded to whole words."""
    bits = (signs > 0).numpy()
    bits = np.pad(bits, ((0, 0), (0, -bits.shape[1] % WORD_BITS)))
    return np.packbits(bits, axis=1, bitorder="little").view(np.uint64)


# --- packed layers ------------------------------------------------------------------------------

class PackedIntLinear(nn.Module):
    """Integer weight codes at their bit-width (1..7 bits packed, int8, 9..16 bits as int16) with one FP32 scale and
    an FP32 bias; int8 per-row activations: y = (x_codes @ W_codes.T) * scale / s_x + b, after an optional input
    LayerNorm (BitLinear has one, an int8 PTQ Linear none). s_x = 1 / step: see `int8_activations`."""

    def __init__(self, codes: torch.Tensor, scale: torch.Tensor, bias: torch.Tensor, bits: int, norm: nn.Module | None):
        super().__init__()
        self.bits, (self.out_features, self.in_features) = bits, codes.shape
        self.norm = norm
        if bits == 1:  # {-1, +1} stored as {0, 1}: value = 2 * bit - 1
            stored, self._affine = pack_bits((codes > 0).to(torch.uint8), 1), (2.0, 1.0)
        elif bits < 8:  # [-2^(k-1), 2^(k-1) - 1] stored offset by 2^(k-1)
            offset = 2 ** (bits - 1)
            stored, self._affine = pack_bits((codes + offset).to(torch.uint8), bits), (1.0, float(offset))
        else:
            stored, self._affine = codes.to(torch.int8 if bits == 8 else torch.int16), None
        self.register_buffer("weight_codes", stored)
        self.register_buffer("scale", scale.detach().reshape(()).clone().float())
        self.register_buffer("bias", bias.detach().clone())

    def decoded_weight(self) -> torch.Tensor:
        """The integer-valued (out, in) float matrix the codes stand for."""
        if self._affine is None:
            return self.weight_codes.float()
        return decode(self.weight_codes, self.bits, self.in_features, *self._affine)

    @property
    def weight_nbytes(self) -> int:
        return self.weight_codes.numel() * self.weight_codes.element_size() + self.scale.element_size()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        xc, step = int8_activations(self.norm(x) if self.norm is not None else x)
        return codes_product(xc, self.decoded_weight(), self.bits <= 8) * (self.scale * step) + self.bias


def pack_bitlinear(layer: BitLinear) -> PackedIntLinear:
    """A BitLinear (Eq. 2) at its bit-width, its LayerNorm kept in front."""
    codes, scale = layer.quantized_weight()
    return PackedIntLinear(codes, scale, layer.bias, layer.bits, copy.deepcopy(layer.norm))


class PackedTernaryLinear(nn.Module):
    """BitNet layer with its {-1, 0, 1} codes stored at 2 bits each, per-row FP32 scales."""

    def __init__(self, layer: TernaryLinear):
        super().__init__()
        codes, alpha = layer.quantized_weight()
        self.in_features, self.out_features, self.act_delta = layer.in_features, layer.out_features, layer.act_delta
        self.norm = copy.deepcopy(layer.norm)
        self.register_buffer("weight_codes", pack_bits((codes + 1).to(torch.uint8), 2))
        self.register_buffer("alpha", alpha.detach().clone())
        self.register_buffer("bias", layer.bias.detach().clone())

    def decoded_weight(self) -> torch.Tensor:
        return decode(self.weight_codes, 2, self.in_features, 1.0, 1.0)  # stored as code + 1

    @property
    def weight_nbytes(self) -> int:
        return self.weight_codes.numel() + self.alpha.numel() * self.alpha.element_size()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        xc = ternary_activations(self.norm(x), self.act_delta)
        return F.linear(xc, self.decoded_weight()) * self.alpha + self.bias


class PackedPopcountLinear(nn.Module):
    """Eq. 4 on bits: y = popcount(x_b XOR w_b) - d/2, with a real popcount and no multiply."""

    def __init__(self, layer: PopcountLinear):
        super().__init__()
        self.in_features, self.out_features, self.tau = layer.in_features, layer.out_features, layer.tau
        words = pack_signs(layer.quantized_weight())
        self.register_buffer("weight_bits", torch.from_numpy(words.view(np.uint8).copy()))

    @property
    def weight_nbytes(self) -> int:
        return self.weight_bits.numel()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        xw = pack_signs(torch.where(x.detach() > self.tau, 1.0, -1.0))
        ww = self.weight_bits.numpy().view(np.uint64)
        rows = max(1, POPCOUNT_CHUNK // ww.size)
        mismatches = np.empty((len(xw), self.out_features), dtype=np.int64)
        for i in range(0, len(xw), rows):
            mismatches[i:i + rows] = np.bitwise_count(xw[i:i + rows, None, :] ^ ww[None]).sum(-1, dtype=np.int64)
        return torch.from_numpy(mismatches).float() - self.in_features / 2


PACKERS = {BitLinear: pack_bitlinear, TernaryLinear: PackedTernaryLinear, PopcountLinear: PackedPopcountLinear}


def pack_layer(module: nn.Module) -> nn.Module:
    """The deployable copy of one layer: packed if quantized, dropped if Dropout, else an FP32 copy."""
    for kind, packer in PACKERS.items():
        if isinstance(module, kind):
            return packer(module)
    if isinstance(module, nn.Dropout):
        return nn.Identity()
    return copy.deepcopy(module)


class PackedMLP(nn.Module):
    """An `MLPExpert` in deployable form (inference only). `nbytes`: all stored bytes.

    `quantized_nbytes` / `quantized_fp32_nbytes`: the quantized layers' weight storage (codes +
    their scales) against the same weights in FP32; everything else (biases, LayerNorms, the final
    classifier) stays FP32 and is counted in `nbytes`.
    """

    def __init__(self, expert: nn.Module):
        super().__init__()
        self.body = nn.Sequential(*[pack_layer(m) for m in expert.body])
        self.head = copy.deepcopy(expert.head)
        self.requires_grad_(False)
        self.eval()

    @property
    def nbytes(self) -> int:
        return tensor_bytes(self)

    @property
    def quantized_nbytes(self) -> int:
        return sum(m.weight_nbytes for m in self.body if hasattr(m, "weight_nbytes"))

    @property
    def quantized_fp32_nbytes(self) -> int:
        return sum(4 * m.in_features * m.out_features for m in self.body if hasattr(m, "weight_nbytes"))

    def packed(self) -> "PackedMLP":
        return self

    def after_training(self) -> "PackedMLP":
        return self

    @torch.inference_mode()
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.body(x))

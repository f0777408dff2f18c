"""Quantization math and the trainable (fake-quant) layers of the paper's experts.

Every layer computes its output the way its packed form (`qmoe.packing`) does: an integer-valued
product of codes, then one rescale, `y = (x_codes @ w_codes.T) * scale + bias`. During training
the codes carry a straight-through estimator (STE), so gradients are those of the reference
implementation (`W + (W_q - W).detach()`), while the forward value is exactly the codes the packed
form stores. That is why fake-quant and packed forward passes agree to float rounding, not just
"closely".

- `BitLinear` (Qk-Base, Eq. 2): k-bit per-layer symmetric weights, int8 per-row activations.
- `TernaryLinear` (BitNet-Base, Eq. 3): ternary weights with per-row scales, ternary activations.
- `PopcountLinear` (Popcount-Base, Eq. 4): binary inputs and weights, y = popcount(x XOR w) - d/2.
"""
from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn import functional as F

from .errors import ConfigError

KBIT_WIDTHS = (1, 2, 4, 8, 16)
ACT_MAX = 127.0  # int8 activations: s_x = 127 / max|x| (paper Sec. 4.3)
EPS = 1e-5  # floor of every absmax, as in the reference


def check_bits(bits) -> int:
    """Return `bits` if Eq. 2 is implemented for it, else raise a ConfigError that says why."""
    if isinstance(bits, bool) or not isinstance(bits, int) or bits not in KBIT_WIDTHS:
        raise ConfigError(f"BitLinear bits must be one of {', '.join(map(str, KBIT_WIDTHS))}; got {bits!r} "
                          "(the paper's Qk-Base experts; ternary is BitNet-Base, binary popcount is Popcount-Base)")
    return bits


def check_threshold(name: str, value) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
        raise ConfigError(f"{name} must be a finite number >= 0; got {value!r}")
    return float(value)


def ste(codes: torch.Tensor, latent: torch.Tensor) -> torch.Tensor:
    """Forward: `codes`, bit-exact. Backward: identity to `latent` (the straight-through estimator)."""
    return codes + (latent - latent.detach())


# --- quantizers: tensor -> (integer codes as float, scale); never differentiated -----------------

@torch.no_grad()
def int8_activations(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-row absmax int8 (s_x = 127 / max|x|): codes round(x / step) in [-127, 127] and step = max|x| / 127 = 1 / s_x,
    of shape (rows, 1). Dividing by the step (not multiplying by s_x) is what ONNX Runtime's QuantizeLinear does,
    so the deployed model computes the very same codes."""
    step = x.abs().amax(dim=-1, keepdim=True).clamp(min=EPS) / ACT_MAX
    return torch.clamp(torch.round(x / step), -128, 127), step


@torch.no_grad()
def kbit_weights(w: torch.Tensor, bits: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Eq. 2 on the mean-centred weights, per layer: codes in [-2^(k-1), 2^(k-1) - 1] and scale s_w.

    k = 1 has no Eq. 2 scale (2^0 - 1 = 0); as in the reference the codes are sign(W - mean W) with
    scale 1, and an exact zero counts as +1 so that every weight is one bit.
    """
    wc = w - w.mean()
    if bits == 1:
        return torch.where(wc >= 0, 1.0, -1.0), torch.ones((), dtype=w.dtype)
    qmax = 2 ** (bits - 1) - 1
    s = wc.abs().amax().clamp(min=EPS) / qmax
    return torch.clamp(torch.round(wc / s), -qmax - 1, qmax), s


@torch.no_grad()
def ternary_activations(x: torch.Tensor, delta: float = 0.05) -> torch.Tensor:
    """Reference BitNet activations: sign(x), zero where |x| < delta * mean|x| of the row; no scale."""
    thr = delta * x.abs().mean(dim=-1, keepdim=True)
    return torch.where(x.abs() < thr, 0.0, torch.sign(x))


@torch.no_grad()
def ternary_weights(w: torch.Tensor, delta: float = 0.15) -> tuple[torch.Tensor, torch.Tensor]:
    """Eq. 3 per output row: codes in {-1, 0, 1} and scales alpha of shape (rows,).

    Rows are centred; tau = delta * mean|row|; alpha = mean |w| over the row's non-zero codes, which
    is the least-squares scale for those codes (the reference's closed form).
    """
    wc = w - w.mean(dim=1, keepdim=True)
    code = torch.where(wc.abs() < delta * wc.abs().mean(dim=1, keepdim=True), 0.0, torch.sign(wc))
    nz = code.abs()
    alpha = (wc.abs() * nz).sum(dim=1) / nz.sum(dim=1).clamp(min=1.0)
    return code, alpha.clamp(min=EPS)


@torch.no_grad()
def binarize(x: torch.Tensor, tau: float = 0.05) -> torch.Tensor:
    """Eq. 4's binarization with fixed threshold tau, as signs: +1 where x > tau, else -1."""
    return torch.where(x > tau, 1.0, -1.0)


# --- layers ------------------------------------------------------------------------------------

class BitLinear(nn.Linear):
    """k-bit BitLinear (Eq. 2), the reference's layer: LayerNorm on the input, int8 activations.

    y = (x_codes @ W_codes.T) * s_w * step_x + b (step_x = 1 / s_x). Weights: centred by the layer mean, per-layer scale
    s_w = max|W - mean W| / (2^(k-1) - 1). Xavier-uniform weights and zero bias, as the reference.
    k = 16 is real 16-bit quantization (int16 codes), where the reference skips quantization.
    """

    def __init__(self, in_features: int, out_features: int, bits: int = 4):
        super().__init__(in_features, out_features)
        self.bits = check_bits(bits)
        self.norm = nn.LayerNorm(in_features)
        nn.init.xavier_uniform_(self.weight)
        nn.init.zeros_(self.bias)

    def quantized_weight(self) -> tuple[torch.Tensor, torch.Tensor]:
        return kbit_weights(self.weight, self.bits)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.norm(x)
        xc, step = int8_activations(x)
        wc, sw = self.quantized_weight()
        y = F.linear(ste(xc, x / step), ste(wc, self.weight / sw))
        return y * (sw * step) + self.bias

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, bits={self.bits}"


class TernaryLinear(nn.Linear):
    """BitNet ternary layer (Eq. 3) as the reference builds it: LayerNorm, ternary activations
    (threshold 0.05 x mean|x|, no scale), ternary weights (threshold 0.15 x mean|W_row - mean|)
    with per-row scales alpha. The paper calls tau and alpha learned; the reference computes them
    from the weights at every step (alpha is then the least-squares optimum), and so does qmoe.
    """

    def __init__(self, in_features: int, out_features: int, act_delta: float = 0.05, weight_delta: float = 0.15):
        super().__init__(in_features, out_features)
        self.act_delta = check_threshold("act_delta", act_delta)
        self.weight_delta = check_threshold("weight_delta", weight_delta)
        self.norm = nn.LayerNorm(in_features)
        nn.init.xavier_uniform_(self.weight)
        nn.init.zeros_(self.bias)

    def quantized_weight(self) -> tuple[torch.Tensor, torch.Tensor]:
        return ternary_weights(self.weight, self.weight_delta)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.norm(x)
        wc, alpha = self.quantized_weight()
        y = F.linear(ste(ternary_activations(x, self.act_delta), x), ste(wc, self.weight / alpha[:, None]))
        return y * alpha + self.bias


class PopcountLinear(nn.Module):
    """Eq. 4, multiply-free: y = popcount(x_b XOR w_b) - d/2 = -(s_x . s_w) / 2 with s = +-1 signs.

    Inputs and weights are binarized with the fixed threshold tau = 0.05 (bit = value > tau); no
    bias, no scale (Eq. 4 has none; the LayerNorm that follows supplies both). Trained with an
    identity STE. The latent weights start centred on tau so that half the weight bits are set.
    """

    def __init__(self, in_features: int, out_features: int, tau: float = 0.05):
        super().__init__()
        self.in_features, self.out_features = in_features, out_features
        self.tau = check_threshold("tau", tau)
        self.weight = nn.Parameter(torch.empty(out_features, in_features))
        bound = math.sqrt(6.0 / (in_features + out_features))
        nn.init.uniform_(self.weight, self.tau - bound, self.tau + bound)

    def quantized_weight(self) -> torch.Tensor:
        return binarize(self.weight, self.tau)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.linear(ste(binarize(x, self.tau), x), ste(self.quantized_weight(), self.weight))
        return -0.5 * y

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, tau={self.tau}"

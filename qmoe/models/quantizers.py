"""Quantization math and the trainable (fake-quant) layers of the paper's experts.

Every layer computes its output the way its packed form (`qmoe.models.packing`) does: an integer-valued
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

import functools
import math

import torch
from torch import nn
from torch.nn import functional as F

from ..core.errors import ConfigError

KBIT_WIDTHS = (1, 2, 4, 8, 16)  # the paper's Qk-Base widths (registered by name); any width in KBIT_RANGE builds
KBIT_RANGE = range(1, 17)  # Eq. 2 at any integer k from 1 to 16 (`Q3-Base`, `Q12-Base`, ...: qmoe.models.experts)
ACT_MAX = 127.0  # int8 activations: s_x = 127 / max|x| (paper Sec. 4.3)
EPS = 1e-5  # floor of every absmax, as in the reference


def check_bits(bits) -> int:
    """Return `bits` if Eq. 2 is implemented for it (any integer 1..16), else raise a ConfigError that says why."""
    if isinstance(bits, bool) or not isinstance(bits, int) or bits not in KBIT_RANGE:
        raise ConfigError(f"BitLinear bits must be an integer from {KBIT_RANGE.start} to {KBIT_RANGE.stop - 1}; "
                          f"got {bits!r} (the paper's widths are {', '.join(map(str, KBIT_WIDTHS))}; ternary is "
                          "BitNet-Base, binary popcount is Popcount-Base)")
    return bits


def check_threshold(name: str, value) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
        raise ConfigError(f"{name} must be a finite number >= 0; got {value!r}")
    return float(value)


# --- quantizers: tensor -> (integer codes as float, scale); never differentiated -----------------
# They run at every forward pass (a 1280 x 640 weight matrix per layer and training step), so the frequent ones
# work in place and in float arithmetic: bool masks, torch.where and fresh temporaries cost more on CPU than the
# arithmetic itself.

def _at_least(a: torch.Tensor, threshold: torch.Tensor) -> torch.Tensor:
    """1.0 where a >= threshold, else 0.0 (as float, computed in float arithmetic)."""
    return (a - threshold).sign_().add_(1.0).clamp_(max=1.0)


@torch.no_grad()
def int8_activations(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-row absmax int8 (s_x = 127 / max|x|): codes round(x / step) in [-127, 127] and step = max|x| / 127 = 1 / s_x,
    of shape (rows, 1). Dividing by the step (not multiplying by s_x) is what ONNX Runtime's QuantizeLinear does,
    so the deployed model computes the very same codes."""
    step = x.abs().amax(dim=-1, keepdim=True).clamp(min=EPS) / ACT_MAX
    return torch.round(x / step).clamp_(-128, 127), step


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
    lo, hi = torch.aminmax(wc)  # max|wc| without an |wc| temporary
    s = torch.maximum(-lo, hi).clamp(min=EPS) / qmax
    return wc.div_(s).round_().clamp_(-qmax - 1, qmax), s


@torch.no_grad()
def ternary_activations(x: torch.Tensor, delta: float = 0.05) -> torch.Tensor:
    """Reference BitNet activations: sign(x), zero where |x| < delta * mean|x| of the row; no scale."""
    a = x.abs()
    return torch.sign(x).mul_(_at_least(a, delta * a.mean(dim=-1, keepdim=True)))


@torch.no_grad()
def ternary_weights(w: torch.Tensor, delta: float = 0.15) -> tuple[torch.Tensor, torch.Tensor]:
    """Eq. 3 per output row: codes in {-1, 0, 1} and scales alpha of shape (rows,).

    Rows are centred; tau = delta * mean|row|; alpha = mean |w| over the row's non-zero codes, which
    is the least-squares scale for those codes (the reference's closed form).
    """
    wc = w - w.mean(dim=1, keepdim=True)
    a = wc.abs()
    keep = _at_least(a, delta * a.mean(dim=1, keepdim=True))
    code = wc.sign_().mul_(keep)
    nonzero = torch.linalg.vector_norm(code, ord=1, dim=1)  # number of non-zero codes per row
    alpha = a.mul_(keep).sum(dim=1) / nonzero.clamp(min=1.0)
    return code, alpha.clamp(min=EPS)


@torch.no_grad()
def binarize(x: torch.Tensor, tau: float = 0.05) -> torch.Tensor:
    """Eq. 4's binarization with fixed threshold tau, as signs: +1 where x > tau, else -1."""
    return torch.where(x > tau, 1.0, -1.0)


# --- the integer product and its straight-through gradient ---------------------------------------

@functools.cache
def int8_product_is_exact() -> bool:
    """Whether `torch._int_mm` (int8 x int8 -> int32) exists here and is exact, checked once on full-range codes.

    On CPU it is about 4x faster than the float32 product of the same codes. Some kernels (x86 without VNNI) may
    saturate 16-bit partial sums; those would fail this check and the float product is used instead.
    """
    gen = torch.Generator().manual_seed(0)
    a = torch.randint(-128, 128, (33, 1280), generator=gen, dtype=torch.int8)
    b = torch.randint(-128, 128, (17, 1280), generator=gen, dtype=torch.int8)
    a[0], a[1], b[0] = -128, 127, -128  # the extreme sums: +-128 * 128 * 1280
    try:
        got = torch._int_mm(a, b.t())
    except (AttributeError, RuntimeError, NotImplementedError):
        return False
    return torch.equal(got.double(), a.double() @ b.double().t())


def codes_product(xc: torch.Tensor, wc: torch.Tensor, int8: bool) -> torch.Tensor:
    """x_codes @ w_codes.T of integer-valued float codes, as float32. `int8`: both fit int8, so the exact int32
    product runs where available. Either way the result is exact while the sums stay below 2^24 (every <= 4-bit
    and ternary layer); beyond (extreme 8-bit rows) float32 rounds them where int32 does not."""
    if int8 and len(xc) and int8_product_is_exact():
        return torch._int_mm(xc.to(torch.int8), wc.to(torch.int8).t()).to(xc.dtype)
    return F.linear(xc, wc)


class _CodesLinear(torch.autograd.Function):
    """y = (x_codes @ w_codes.T) * x_scale * w_scale, differentiated with the straight-through estimator.

    The codes stand for x / x_scale and W / w_scale (scales per row of x; per layer or per output row of W), so
    the STE gradients are those of the dequantized product: dL/dx = (g * w_scale) @ w_codes and
    dL/dW = (g * x_scale).T @ x_codes. That is exactly what autograd gives for the reference's formulation,
    `codes + (latent - latent.detach())` on x / x_scale and W / w_scale (W + (W_q - W).detach()), without its
    weight-sized temporaries at every step. `x` and `weight` only receive the gradients; a scale of None is 1.
    """

    @staticmethod
    def forward(ctx, x, weight, xc, x_scale, wc, w_scale, int8: bool):
        ctx.save_for_backward(xc, x_scale, wc, w_scale)
        y = codes_product(xc, wc, int8)
        scale = x_scale if w_scale is None else w_scale if x_scale is None else w_scale * x_scale
        return y if scale is None else y * scale

    @staticmethod
    def backward(ctx, g):
        xc, x_scale, wc, w_scale = ctx.saved_tensors
        n, live = len(g), None
        if n and not (mask := g.ne(0).any(1)).all():
            # Rows whose gradient is 0 (an MoE expert's unrouted rows) add nothing to dW and get dx = 0: skip them.
            live = mask.nonzero().squeeze(1)
            g, xc = g[live], xc[live]
            x_scale = x_scale[live] if x_scale is not None and x_scale.dim() else x_scale
        grad_x = grad_w = None
        if ctx.needs_input_grad[0]:
            grad_x = (g if w_scale is None else g * w_scale) @ wc
            if live is not None:
                grad_x = grad_x.new_zeros(n, grad_x.shape[1]).index_copy_(0, live, grad_x)
        if ctx.needs_input_grad[1]:
            grad_w = (g if x_scale is None else g * x_scale).t() @ xc
        return grad_x, grad_w, None, None, None, None, None


def codes_linear(x: torch.Tensor, weight: torch.Tensor, xc: torch.Tensor, x_scale: torch.Tensor | None,
                 wc: torch.Tensor, w_scale: torch.Tensor | None, int8: bool) -> torch.Tensor:
    """(xc @ wc.T) * x_scale * w_scale, with the straight-through gradient to `x` and `weight` (`_CodesLinear`)."""
    return _CodesLinear.apply(x, weight, xc, x_scale, wc, w_scale, int8)


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
        return codes_linear(x, self.weight, xc, step, wc, sw, int8=self.bits <= 8) + self.bias

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
        xc = ternary_activations(x, self.act_delta)
        return codes_linear(x, self.weight, xc, None, wc, alpha, int8=True) + self.bias


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
        xc, wc = binarize(x, self.tau), self.quantized_weight()
        return -0.5 * codes_linear(x, self.weight, xc, None, wc, None, int8=True)

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, tau={self.tau}"

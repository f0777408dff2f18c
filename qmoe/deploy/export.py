"""Export trained engine models to ONNX, each quantized layer kept at its bit-width with the engine's codes.

Nothing is re-quantized: the exporter reads the codes and scales of the engine's packed layers
(`qmoe.models.packing`) and lays them out for ONNX Runtime's integer and low-bit operators.

- int8 weights (Q8-Base, Q8-Base-PTQ): `MatMulInteger` on int8 codes with per-row int8 activations.
- int16 weights (Q16-Base; Q9- to Q15-Base, whose codes the engine stores as int16): no int16 matmul exists, so
  each code is split into a high signed byte and a low unsigned byte (c = 256 hi + lo, still 2 bytes per weight)
  and both planes go through one `MatMulInteger` (the low plane with zero point -128); exact in int32, summed in
  float32 as the engine does.
- 4- and 2-bit codes (Q4-, Q2-Base): com.microsoft `MatMulNBits`, which keeps them packed. ONNX Runtime
  has no 1-bit or ternary kernel, so 1-bit (Q1-Base), ternary (BitNet-Base) and popcount codes are stored
  as 2-bit codes (the narrowest `MatMulNBits` takes: file bytes are reported beside the engine's bytes).
- Other widths go to the next width a CPU kernel runs (`onnx_weight_bits`): ONNX Runtime 1.32's CPU
  `MatMulNBits` takes 2, 4 and 8 bits only ("additional bits support is planned"), so 3-bit codes are stored as
  4-bit `MatMulNBits` codes, 5- to 7-bit codes as int8 (`MatMulIntegerToFloat`, as Q8-Base) and 9- to 15-bit
  codes as int16 planes (as Q16-Base). The codes are the engine's, unchanged: only the container is wider.
- Popcount-Base: ONNX has no popcount operator. For +-1 vectors popcount(x XOR w) - d/2 = -(x . w)/2,
  so the layer runs as a +-1 dot product on the 2-bit codes, exact (every partial sum is a small integer).
- Activations: BitLinear's per-row absmax int8 codes are computed in the graph exactly as the engine does.
  `MatMulNBits` at accuracy level 4 then re-quantizes its float input to int8 *block-wise* (blocks of
  `block_size` along the input dimension) before its integer kernel; the input already holds integer codes,
  so this rounds each block to its own int8 grid (error < half a code, zero in the block holding the row
  maximum). Ternary and +-1 activations pass that step exactly.
- Q8-Base-PTQ: torch.ao's dynamic PTQ quantizes activations per *tensor*, asymmetric uint8 with a reduced
  7-bit range on x86; the export quantizes them per *row*, symmetric int8 (the same rule as BitLinear), so a
  clip's answer does not depend on its batch-mates (as the engine's per-sample PTQ) and no 7-bit range is lost.

MoE graphs hold the router, the Bayesian router's fixed Monte Carlo dropout masks (the engine's seeded masks),
Eq. 8's curiosity and the top-k combine. Without curiosity each expert runs only on the rows routed to it
(NonZero/Gather/ScatterND), so a top-1 MoE at batch 1 runs one expert, as in the engine.
`explain=True` adds the outputs Classify needs (router and Monte Carlo probabilities, every expert's logits).
"""
from __future__ import annotations

import numpy as np
import onnx
import torch
from onnx import TensorProto
from torch import nn

from ..core.errors import ConfigError
from ..models.moe import QuantizedMoE
from ..models.packing import PackedIntLinear, PackedMLP, PackedPopcountLinear, PackedTernaryLinear, pack_bits
from ..models.ptq import Int8Model
from ..models.quantizers import ACT_MAX, EPS
from ..models.routing import _EPS as ROUTING_EPS
from .graph import MS_DOMAIN, Graph, float_input, float_output

BLOCK_SIZE = 128  # MatMulNBits block length along the input dimension (scales are stored per block)
ACCURACY_LEVEL = 4  # MatMulNBits: int8 compute (its fast integer kernel)
PTQ_LEVELS = 127  # torch.ao dynamic int8 on x86 (fbgemm) quantizes activations with reduce_range: 0..127
INPUT, OUTPUT = "embedding", "logits"
EXPLAIN_OUTPUTS = ("router_probs", "mc_probs", "expert_logits")


# --- layers ------------------------------------------------------------------------------------

def _np(t: torch.Tensor) -> np.ndarray:
    return t.detach().cpu().numpy()


def _layernorm(g: Graph, x: str, ln: nn.LayerNorm) -> str:
    d = ln.normalized_shape[-1]
    weight = _np(ln.weight) if ln.weight is not None else np.ones(d, np.float32)
    bias = _np(ln.bias) if ln.bias is not None else np.zeros(d, np.float32)
    return g.op("LayerNormalization", x, g.const(weight, np.float32), g.const(bias, np.float32), axis=-1,
                epsilon=float(ln.eps))


def _linear(g: Graph, x: str, weight: np.ndarray, bias: np.ndarray | None) -> str:
    y = g.op("MatMul", x, g.const(np.ascontiguousarray(weight.T), np.float32))
    return g.op("Add", y, g.const(bias, np.float32)) if bias is not None else y


def _act_step(g: Graph, x: str) -> tuple[str, str]:
    """The engine's per-row int8 activations (`int8_activations`): the codes x / step, not yet rounded, and the
    (B, 1) step max|x| / 127 (max floored at EPS)."""
    peak = g.op("ReduceMax", g.op("Abs", x), g.const([-1], np.int64), keepdims=1)
    step = g.op("Div", g.op("Max", peak, g.const(EPS, np.float32)), g.const(ACT_MAX, np.float32))
    return g.op("Div", x, step), step


def _ptq_codes(g: Graph, x: str) -> tuple[str, str]:
    """torch.ao's dynamic activation quantization (backend "torch.ao"), per row as the engine runs each clip alone:
    asymmetric uint8 over [min(x, 0), max(x, 0)] with fbgemm's reduced 7-bit range; returns the uint8 codes
    shifted to zero point 128 and the (B, 1) scale."""
    axis = g.const([-1], np.int64)
    lo = g.op("Min", g.op("ReduceMin", x, axis, keepdims=1), g.const(0.0, np.float32))
    hi = g.op("Max", g.op("ReduceMax", x, axis, keepdims=1), g.const(0.0, np.float32))
    scale = g.op("Div", g.op("Sub", hi, lo), g.const(float(PTQ_LEVELS), np.float32))
    scale = g.op("Where", g.op("Equal", scale, g.const(0.0, np.float32)), g.const(0.1, np.float32), scale)
    zero = g.op("Round", g.op("Neg", g.op("Div", lo, scale)))
    q = g.op("Clip", g.op("Add", g.op("Round", g.op("Div", x, scale)), zero), g.const(0.0, np.float32),
             g.const(float(PTQ_LEVELS), np.float32))
    return _shifted(g, g.op("Sub", q, zero)), scale


def _shifted(g: Graph, codes: str) -> str:
    """Integer-valued float codes in [-128, 127] -> uint8 with zero point 128 (rounded half to even)."""
    return g.op("QuantizeLinear", codes, g.const(1.0, np.float32), g.const(128, np.uint8))


def _integer_matmul(g: Graph, x: str, codes: np.ndarray, scale, bias: np.ndarray | None, ptq: bool = False) -> str:
    """y = (x_codes @ codes.T) * scale / s_x + bias for int8 or int16 weight codes (out, in), int8 per-row x_codes."""
    if ptq:
        q, step = _ptq_codes(g, x)
    else:
        codes_f, step = _act_step(g, x)
        q = _shifted(g, codes_f)
    zero = g.const(128, np.uint8)
    if codes.dtype == np.int8:
        y = g.op("MatMulIntegerToFloat", q, g.const(np.ascontiguousarray(codes.T)), step, g.const(scale, np.float32),
                 zero, domain=MS_DOMAIN)
        return g.op("Add", y, g.const(bias, np.float32)) if bias is not None else y
    if codes.dtype != np.int16:
        raise ConfigError(f"integer weight codes must be int8 or int16, got {codes.dtype}")
    c = codes.T.astype(np.int32)  # c = 256 hi + lo: one integer matmul over both byte planes
    hi, lo = (c >> 8).astype(np.int8), ((c & 0xFF) - 128).astype(np.int8)
    n = codes.shape[0]
    planes = g.const(np.ascontiguousarray(np.concatenate([hi, lo], axis=1)))
    plane_zero = g.const(np.concatenate([np.zeros(n, np.int8), np.full(n, -128, np.int8)]))
    plane_scale = g.const(np.concatenate([np.full(n, 256.0 * scale), np.full(n, scale)]), np.float32)
    both = g.op("MatMulIntegerToFloat", q, planes, step, plane_scale, zero, plane_zero, domain=MS_DOMAIN)
    high, low = g.op("Split", both, g.const([n, n], np.int64), axis=-1, outputs=2)
    y = g.op("Add", high, low)
    return g.op("Add", y, g.const(bias, np.float32)) if bias is not None else y


def _nbits_matmul(g: Graph, a: str, codes: np.ndarray, bits: int, scales, block: int = BLOCK_SIZE) -> str:
    """a @ (codes * scales).T with signed integer codes (out, in) packed `bits` wide for MatMulNBits.

    MatMulNBits stores q = code + 2^(bits-1) (its default zero point); `scales` is one per output row or one
    for the whole layer. The input dimension is padded to whole blocks (padding never meets an input value).
    """
    n, k = codes.shape
    zero = 2 ** (bits - 1)
    q = codes.astype(np.int64) + zero
    if q.min() < 0 or q.max() >= 2 ** bits:
        raise ConfigError(f"codes in [{codes.min()}, {codes.max()}] do not fit {bits}-bit MatMulNBits")
    blocks = -(-k // block)
    q = np.pad(q, ((0, 0), (0, blocks * block - k)), constant_values=zero)
    packed = pack_bits(torch.from_numpy(q), bits).numpy().reshape(n, blocks, block * bits // 8)
    s = np.broadcast_to(np.asarray(scales, np.float32).reshape(-1, 1), (n, blocks))
    return g.op("MatMulNBits", a, g.const(np.ascontiguousarray(packed)), g.const(np.ascontiguousarray(s).reshape(-1)),
                domain=MS_DOMAIN, K=k, N=n, bits=bits, block_size=block, accuracy_level=ACCURACY_LEVEL)


def onnx_weight_bits(bits: int) -> int:
    """The width a k-bit BitLinear's codes are stored at in the ONNX graph: the narrowest CPU kernel that holds
    them (MatMulNBits 2 or 4 bits, then int8 and int16 integer matmuls)."""
    return next(w for w in (2, 4, 8, 16) if bits <= w)


def _int_linear(g: Graph, x: str, layer: PackedIntLinear) -> str:
    if layer.norm is not None:
        x = _layernorm(g, x, layer.norm)
    codes = layer.decoded_weight().round().to(torch.int32).numpy()
    scale, bias = float(layer.scale), _np(layer.bias)
    width = onnx_weight_bits(layer.bits)
    if width >= 8:
        return _integer_matmul(g, x, codes.astype(np.int8 if width == 8 else np.int16), scale, bias)
    codes_f, step = _act_step(g, x)
    a, codes = _with_sentinels(g, codes_f, codes)
    y = _nbits_matmul(g, a, codes, width, scale)
    return g.op("Add", g.op("Mul", y, step), g.const(bias, np.float32))


def _with_sentinels(g: Graph, a: str, codes: np.ndarray, block: int = BLOCK_SIZE) -> tuple[str, np.ndarray]:
    """Make MatMulNBits' int8 quantization of its input give exactly the engine's codes.

    At accuracy level 4 MatMulNBits quantizes its float input per block of `block` values with the step
    max|block| / 127 (round half to even), not per row. Here every block holds `block - 1` inputs a = x / step_x
    (|a| <= 127) and one input of 127 against weight code 0, so every block's step is exactly 1 and the codes are
    round(a), the engine's per-row codes; the integer products are then the engine's. Costs two Pads per layer."""
    n, k = codes.shape
    per = block - 1
    blocks = -(-k // per)
    a = g.op("Pad", a, g.const([0, 0, 0, blocks * per - k], np.int64))
    a = g.op("Pad", g.op("Reshape", a, g.const([-1, blocks, per], np.int64)), g.const([0, 0, 0, 0, 0, 1], np.int64),
             g.const(ACT_MAX, np.float32))
    codes = np.pad(codes, ((0, 0), (0, blocks * per - k))).reshape(n, blocks, per)
    codes = np.pad(codes, ((0, 0), (0, 0), (0, 1))).reshape(n, blocks * block)
    return g.op("Reshape", a, g.const([-1, blocks * block], np.int64)), codes


def _ternary(g: Graph, x: str, layer: PackedTernaryLinear) -> str:
    x = _layernorm(g, x, layer.norm)
    size = g.op("Abs", x)
    threshold = g.op("Mul", g.op("ReduceMean", size, g.const([-1], np.int64), keepdims=1),
                     g.const(layer.act_delta, np.float32))
    a = g.op("Where", g.op("Less", size, threshold), g.const(0.0, np.float32), g.op("Sign", x))
    codes = layer.decoded_weight().round().to(torch.int32).numpy()
    return g.op("Add", _nbits_matmul(g, a, codes, 2, _np(layer.alpha)), g.const(_np(layer.bias), np.float32))


def _popcount(g: Graph, x: str, layer: PackedPopcountLinear) -> str:
    a = g.op("Where", g.op("Greater", x, g.const(layer.tau, np.float32)), g.const(1.0, np.float32),
             g.const(-1.0, np.float32))
    bits = np.unpackbits(layer.weight_bits.numpy().reshape(layer.out_features, -1), axis=1, bitorder="little")
    signs = bits[:, :layer.in_features].astype(np.int64) * 2 - 1
    return _nbits_matmul(g, a, signs, 2, -0.5)  # popcount(x XOR w) - d/2 = -(x . w) / 2


def _ptq_linear(g: Graph, x: str, layer) -> str:
    w = layer.weight()
    if w.qscheme() not in (torch.per_tensor_affine, torch.per_tensor_symmetric) or w.q_zero_point() != 0:
        raise ConfigError("the int8 PTQ export handles symmetric per-tensor weights (torch.ao's default)")
    bias = layer.bias()
    return _integer_matmul(g, x, w.int_repr().numpy(), w.q_scale(), None if bias is None else _np(bias), ptq=True)


def _layer(g: Graph, x: str, m: nn.Module) -> str:
    if isinstance(m, (nn.Identity, nn.Dropout)):
        return x
    if isinstance(m, nn.ReLU):
        return g.op("Relu", x)
    if isinstance(m, nn.LayerNorm):
        return _layernorm(g, x, m)
    if isinstance(m, PackedIntLinear):
        return _int_linear(g, x, m)
    if isinstance(m, PackedTernaryLinear):
        return _ternary(g, x, m)
    if isinstance(m, PackedPopcountLinear):
        return _popcount(g, x, m)
    if isinstance(m, torch.ao.nn.quantized.dynamic.Linear):
        return _ptq_linear(g, x, m)
    if type(m) is nn.Linear:
        return _linear(g, x, _np(m.weight), None if m.bias is None else _np(m.bias))
    raise ConfigError(f"no ONNX export for layer {type(m).__name__}")


def deployable_net(model: nn.Module) -> nn.Module:
    """The layers a device runs: the packed MLP, or the int8 model inside a PTQ expert."""
    net = model
    if not isinstance(net, (PackedMLP, Int8Model)):
        if not hasattr(net, "packed"):
            raise ConfigError(f"cannot export {type(model).__name__}: not an engine expert")
        net = net.packed()
    return net.model if isinstance(net, Int8Model) else net


def _expert(g: Graph, x: str, expert: nn.Module) -> str:
    net = deployable_net(expert)
    for m in [*net.body, net.head]:
        x = _layer(g, x, m)
    return x


# --- Mixture of Experts --------------------------------------------------------------------------

def _router(g: Graph, x: str, moe: QuantizedMoE, masks: np.ndarray | None) -> str:
    """Routing probabilities: one deterministic pass (B, N), or the (S, B, N) passes with fixed dropout masks."""
    net = moe.router.net
    hidden = g.op("Relu", _linear(g, x, _np(net[0].weight), _np(net[0].bias)))
    if masks is not None:
        hidden = g.op("Mul", g.op("Unsqueeze", hidden, g.const([0], np.int64)), g.const(masks, np.float32))
    hidden = g.op("Relu", _linear(g, hidden, _np(net[3].weight), _np(net[3].bias)))
    logits = _linear(g, hidden, _np(net[5].weight), _np(net[5].bias))
    if moe.temperature != 1.0:
        logits = g.op("Div", logits, g.const(moe.temperature, np.float32))
    return g.op("Softmax", logits, axis=-1)


def _safe_log(g: Graph, p: str) -> str:
    return g.op("Log", g.op("Max", p, g.const(ROUTING_EPS, np.float32)))


def _curious(g: Graph, p: str, expert_logits: str | None, moe: QuantizedMoE) -> str:
    """Eq. 8 (see `qmoe.models.routing.curious`): softmax(log p + alpha KL) over experts."""
    if moe.curiosity_mode == "paper":
        q = g.op("Max", g.op("Softmax", expert_logits, axis=-1), g.const(ROUTING_EPS, np.float32))
        q_bar = g.op("ReduceMean", q, g.const([1], np.int64), keepdims=1)
        kl = g.op("ReduceSum", g.op("Mul", q, g.op("Sub", g.op("Log", q), g.op("Log", q_bar))),
                  g.const([-1], np.int64), keepdims=0)
    else:  # reference-rebuttal: KL of the routing vector to uniform, one scalar per sample (a no-op, kept literal)
        n = len(moe.expert_names)
        kl = g.op("ReduceSum", g.op("Mul", p, _safe_log(g, g.op("Mul", p, g.const(float(n), np.float32)))),
                  g.const([-1], np.int64), keepdims=1)
    return g.op("Softmax", g.op("Add", _safe_log(g, p), g.op("Mul", kl, g.const(moe.alpha, np.float32))), axis=-1)


def _top_k_weights(g: Graph, p: str, k: int) -> str:
    values, idx = g.op("TopK", p, g.const([k], np.int64), axis=-1, outputs=2)
    return g.op("ScatterElements", g.op("Mul", p, g.const(0.0, np.float32)), idx, values, axis=1)


def _dispatch_one(g: Graph, x: str, p: str, moe: QuantizedMoE) -> str:
    """Top-1 routing of a single clip: If(chosen == 0) expert 0 else If(chosen == 1) expert 1 ..., times its
    routing probability. Only the chosen expert runs, and nothing gathers or scatters rows."""
    weight, chosen = g.op("TopK", p, g.const([1], np.int64), axis=-1, outputs=2)
    chosen = g.op("Reshape", chosen, g.const([], np.int64))

    def chain(b: Graph, i: int) -> str:
        if i == len(moe.experts) - 1:
            return _expert(b, x, moe.experts[i])
        this, rest = b.branch(f"expert_{i}"), b.branch(f"after_{i}")
        return b.op("If", b.op("Equal", chosen, b.const(i, np.int64)),
                    then_branch=this.body(_expert(this, x, moe.experts[i])), else_branch=rest.body(chain(rest, i + 1)))

    return g.op("Mul", chain(g, 0), weight)


def _dispatch(g: Graph, x: str, p: str, moe: QuantizedMoE) -> str:
    """Eq. 6 with every expert run only on the rows routed to it (as `QuantizedMoE._dispatch`), given the routing
    probabilities `p` (B, N). An If node per expert skips an expert no row is routed to, so a top-1 MoE given one
    clip runs one expert; the expert's weights live in its branch (see `Graph.branch`)."""
    batch = g.op("Shape", x, start=0, end=1)
    out = g.op("ConstantOfShape", g.op("Concat", batch, g.const([moe.n_classes], np.int64), axis=0),
               value=onnx.helper.make_tensor("zero", TensorProto.FLOAT, [1], [0.0]))
    row_ids = g.op("Unsqueeze", g.op("Range", g.const(0, np.int64), g.op("Squeeze", batch), g.const(1, np.int64)),
                   g.const([-1], np.int64))  # (B, 1): ScatterND's indices
    n = len(moe.experts)
    if moe.top_k == 1:  # routed = the argmax; its probability is applied once at the end
        routed = g.op("Equal", g.op("ArgMax", p, axis=-1, keepdims=1), g.const(np.arange(n), np.int64))  # (B, N)
        weights = None
    else:
        weights = _top_k_weights(g, p, moe.top_k)
        routed = g.op("Greater", weights, g.const(0.0, np.float32))
    used = g.op("ReduceMax", g.op("Cast", routed, to=TensorProto.INT32), g.const([0], np.int64), keepdims=0)
    used = g.op("Cast", used, to=TensorProto.BOOL)  # (N,): is any row routed to expert i?
    for i, expert in enumerate(moe.experts):
        run, skip = g.branch(f"expert_{i}"), g.branch(f"skip_{i}")
        mine = run.op("Gather", routed, run.const(i, np.int64), axis=1)
        logits = _expert(run, run.op("Compress", x, mine, axis=0), expert)
        if weights is not None:
            w = run.op("Compress", run.op("Gather", weights, run.const(i, np.int64), axis=1), mine, axis=0)
            logits = run.op("Mul", logits, run.op("Unsqueeze", w, run.const([-1], np.int64)))
        added = run.op("ScatterND", out, run.op("Compress", row_ids, mine, axis=0), logits, reduction="add")
        out = g.op("If", g.op("Gather", used, g.const(i, np.int64)), then_branch=run.body(added),
                   else_branch=skip.body(out))
    if weights is None:
        out = g.op("Mul", out, g.op("ReduceMax", p, g.const([-1], np.int64), keepdims=1))
    return out


def _all_experts(g: Graph, x: str, moe: QuantizedMoE) -> str:
    """(B, N, C): every expert on every row."""
    return g.op("Concat", *[g.op("Unsqueeze", _expert(g, x, e), g.const([1], np.int64)) for e in moe.experts], axis=1)


def _combine(g: Graph, weights: str, expert_logits: str) -> str:
    return g.op("ReduceSum", g.op("Mul", g.op("Unsqueeze", weights, g.const([-1], np.int64)), expert_logits),
                g.const([1], np.int64), keepdims=0)


def _moe(g: Graph, x: str, moe: QuantizedMoE, explain: bool, one_clip: bool) -> dict[str, str]:
    masks = moe.router.mc_masks(moe.mc_samples, moe.mc_seed).numpy()
    mc = _router(g, x, moe, masks) if (moe.routes_on_mc_mean or explain) else None
    p = g.op("ReduceMean", mc, g.const([0], np.int64), keepdims=0) if moe.routes_on_mc_mean else _router(g, x, moe, None)
    dense = explain or (moe.alpha > 0 and moe.curiosity_mode == "paper")
    expert_logits = _all_experts(g, x, moe) if dense else None
    curious = moe.alpha > 0 and moe.curiosity_mode != "reference-main"
    routing = _curious(g, p, expert_logits, moe) if curious else p
    if dense:
        out = {OUTPUT: _combine(g, _top_k_weights(g, routing, moe.top_k), expert_logits)}
    else:
        out = {OUTPUT: (_dispatch_one if one_clip and moe.top_k == 1 else _dispatch)(g, x, routing, moe)}
    if explain:
        out.update(router_probs=p, mc_probs=mc, expert_logits=expert_logits)
    return out


# --- models --------------------------------------------------------------------------------------

def export(model: nn.Module, *, batch: int | None = None, explain: bool = False, standardizer: tuple | None = None,
           metadata: dict | None = None) -> onnx.ModelProto:
    """ONNX graph of a trained engine model (after `after_training()`): `embedding` (B, D) -> `logits` (B, C).

    batch=1: the graph a device runs, one clip per call, with a static shape (ONNX Runtime folds the shape
    arithmetic, and a top-1 MoE picks its expert with If nodes alone); batch=None: any batch size.
    standardizer=(mean, scale) puts the z-scoring in front, so the graph takes raw backbone embeddings (the
    file a user deploys); without it the input is the standardized embedding (what the harness measures).
    """
    if batch not in (None, 1):
        raise ConfigError(f"batch must be None (any) or 1 (one clip per call), got {batch!r}")
    model = model.eval()
    moe = isinstance(model, QuantizedMoE)
    if explain and not moe:
        raise ConfigError("explain=True is for MoE models (routing outputs)")
    d = model.in_dim if moe else _in_dim(model)
    g = Graph()
    x = INPUT
    if standardizer is not None:
        mean, scale = (np.asarray(v, np.float32).reshape(-1) for v in standardizer)
        x = g.op("Div", g.op("Sub", x, g.const(mean)), g.const(scale))
    outputs = _moe(g, x, model, explain, batch == 1) if moe else {OUTPUT: _expert(g, x, model)}
    b = batch or "batch"
    shapes = {OUTPUT: [b, None], "router_probs": [b, None], "mc_probs": [None, b, None], "expert_logits": [b, None, None]}
    declared = [float_output(name, shapes[name]) for name in outputs]
    for name, tensor in outputs.items():
        g.rename(tensor, name)
    return g.model([float_input(INPUT, [b, d])], declared, doc=__doc__.split("\n")[0], metadata=metadata)


def _in_dim(model: nn.Module) -> int:
    return next(m.in_features for m in deployable_net(model).body if hasattr(m, "in_features"))


def to_bytes(proto: onnx.ModelProto) -> bytes:
    return proto.SerializeToString()


def export_trained(tm, batch: int | None = 1) -> onnx.ModelProto:
    """The file a user deploys: a trained checkpoint (`qmoe.models.checkpoint.TrainedModel`) with its z-scoring in front,
    so the graph takes the backbone's raw embedding, and what it needs to be read (classes, backbone, recipe)."""
    import json

    config = tm.info.get("config", {})
    meta = {"variant": tm.variant, "dataset": config.get("dataset"), "task": config.get("task"),
            "class_names": json.dumps(list(tm.class_names)), "backbone": config.get("backbone"),
            "embedding": json.dumps(config.get("embedding", {}), sort_keys=True), "qmoe_run_key": tm.info.get("key"),
            "input": "the backbone's pooled embedding of the spectrogram figure (z-scored inside the graph)",
            "output": "class logits (softmax gives the probabilities)",
            "licence": "trained on ESC-50 (K. J. Piczak, ACM MM 2015), CC BY-NC 3.0: non-commercial use only"
            if str(config.get("dataset", "")).startswith("esc50") else ""}
    return export(tm.model, batch=batch, standardizer=(tm.mean, tm.scale), metadata=meta)

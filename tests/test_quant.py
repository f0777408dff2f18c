"""Quantized experts: quantizer math, STE gradients, bit packing, packed vs fake-quant agreement, PTQ."""
import numpy as np
import pytest
import torch
from torch.nn import functional as F

from qmoe.core.errors import ConfigError
from qmoe.experiments.experiment import _scaler
from qmoe.models.experts import MLPExpert
from qmoe.models.packing import PackedPopcountLinear, pack_bits, pack_signs, unpack_bits
from qmoe.models.quantizers import (BitLinear, PopcountLinear, TernaryLinear, int8_activations, kbit_weights,
                                    ternary_weights)
from qmoe.models.registry import create_model, list_variants

SINGLE = ["FP32-Base", "Q1-Base", "Q2-Base", "Q4-Base", "Q8-Base", "Q16-Base", "BitNet-Base", "Q8-Base-PTQ",
          "Popcount-Base"]
FAKE_QUANT = [v for v in SINGLE if v != "Q8-Base-PTQ"]


@pytest.fixture(scope="module")
def fold4(esc50):
    """ESC-50 major task, predefined fold 4 held out; standardized with training-fold statistics."""
    train, test = esc50.split("major", "predefined", 4)
    mu, sd = _scaler(esc50.X[train])  # the pipeline's own standardizer
    X = torch.from_numpy((esc50.X - mu) / sd).float()
    y = torch.from_numpy(esc50.task("major").labels.copy()).long()
    return X[train], y[train], X[test], y[test]


def train(model, X, y, steps=25, seed=0):
    """A short real training run, enough to move the weights (and scales) away from their init."""
    torch.manual_seed(seed)
    opt = torch.optim.AdamW(model.parameters(), lr=5.79e-4, weight_decay=5.13e-3)
    model.train()
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # batches of 64: a second thread only adds OpenMP overhead on a shared CPU
    try:
        for _ in range(steps):
            idx = torch.randint(len(X), (64,))
            loss = F.cross_entropy(model(X[idx]), y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
    finally:
        torch.set_num_threads(threads)
    return model.eval()


@pytest.fixture(scope="module")
def trained(fold4):
    Xtr, ytr, _, _ = fold4
    out = {}
    for name in FAKE_QUANT:
        torch.manual_seed(0)
        out[name] = train(create_model(name, Xtr.shape[1], 5), Xtr, ytr)
    return out


def test_all_nine_single_variants_are_registered():
    assert set(SINGLE) <= set(list_variants("single"))


@pytest.mark.parametrize("bits", [1, 2, 3, 4, 6, 8, 12, 16])
def test_kbit_levels(bits):
    torch.manual_seed(bits)
    codes, _ = kbit_weights(BitLinear(1280, 640, bits=bits).weight.detach(), bits)
    assert torch.equal(codes, codes.round())
    levels = codes.unique().numel()
    if bits == 1:
        assert set(codes.unique().tolist()) == {-1.0, 1.0}
    elif bits <= 8:  # symmetric scale: the extra negative level -2^(k-1) is never needed
        assert levels == 2 ** bits - 1
    else:
        assert 2 ** 8 < levels <= 2 ** 16


@pytest.mark.parametrize("bits", [2, 4, 8, 16])
def test_kbit_clipping_range(bits):
    torch.manual_seed(bits)
    w = BitLinear(256, 64, bits=bits).weight.detach()
    w[0, 0], w[1, 1] = 50 * w.abs().max(), -80 * w.abs().max()  # outliers set the scale
    codes, scale = kbit_weights(w, bits)
    assert codes.min() >= -2 ** (bits - 1) and codes.max() <= 2 ** (bits - 1) - 1
    assert codes.abs().max() == 2 ** (bits - 1) - 1  # the largest weight maps to the last level
    wc = w - w.mean()
    assert (codes * scale - wc).abs().max() <= scale / 2 + 1e-6  # rounding error within half a step


def test_int8_activations_use_the_full_range_per_row():
    x = torch.randn(8, 100) * torch.logspace(-3, 3, 8)[:, None]
    codes, step = int8_activations(x)
    assert codes.min() >= -128 and codes.max() <= 127
    assert torch.equal(codes.abs().amax(1), torch.full((8,), 127.0))
    assert (codes * step - x).abs().le(0.5 * step + 1e-6).all()


def _reference_forward(layer, x):
    """The reference implementation's STE formulation, W + (W_q - W).detach(), for comparison."""
    x = layer.norm(x)
    if isinstance(layer, BitLinear):
        xc, step = int8_activations(x)
        xq = xc * step
        wc, sw = layer.quantized_weight()
        wq = wc * sw
    else:
        from qmoe.models.quantizers import ternary_activations
        xq = ternary_activations(x, layer.act_delta)
        wc, alpha = layer.quantized_weight()
        wq = wc * alpha[:, None]
    xa = x + (xq - x).detach()
    wf = layer.weight + (wq - layer.weight).detach()
    return F.linear(xa, wf, layer.bias)


@pytest.mark.parametrize("make", [lambda: BitLinear(96, 32, bits=4), lambda: BitLinear(96, 32, bits=1),
                                  lambda: BitLinear(96, 32, bits=16), lambda: TernaryLinear(96, 32)])
def test_ste_gradients_flow_as_in_the_reference(make):
    torch.manual_seed(0)
    layer, x = make(), torch.randn(16, 96)
    g = torch.randn(16, 32)
    grads = []
    for fwd in (layer, lambda v: _reference_forward(layer, v)):
        layer.zero_grad()
        xi = x.clone().requires_grad_(True)
        (fwd(xi) * g).sum().backward()
        grads.append((xi.grad.clone(), layer.weight.grad.clone(), layer.bias.grad.clone()))
    for ours, ref in zip(*grads):
        assert ours.abs().sum() > 0 and torch.isfinite(ours).all()
        torch.testing.assert_close(ours, ref, rtol=1e-4, atol=1e-5)


def test_popcount_layer_trains_through_its_ste():
    torch.manual_seed(0)
    layer, x = PopcountLinear(64, 16), torch.randn(8, 64, requires_grad=True)
    layer(x).square().sum().backward()
    assert x.grad.abs().sum() > 0 and layer.weight.grad.abs().sum() > 0


def test_ternary_weights_are_signs_times_row_scales(trained):
    layer = trained["BitNet-Base"].body[0]
    codes, alpha = ternary_weights(layer.weight.detach())
    assert set(codes.unique().tolist()) == {-1.0, 0.0, 1.0}
    assert alpha.shape == (layer.out_features,) and (alpha > 0).all()
    packed = trained["BitNet-Base"].packed().body[0]
    assert set(packed.decoded_weight().unique().tolist()) <= {-1.0, 0.0, 1.0}
    torch.testing.assert_close(packed.alpha, alpha)


@pytest.mark.parametrize("bits", range(1, 9))
def test_packing_round_trip_is_exact(bits):
    gen = torch.Generator().manual_seed(bits)
    codes = torch.randint(0, 2 ** bits, (7, 13), generator=gen, dtype=torch.uint8)  # 13: a ragged last byte
    packed = pack_bits(codes, bits)
    per_row = -(-13 * bits // 8) if 8 % bits == 0 else -(-13 // 8) * bits  # 3, 5, 6, 7 bits: 8 codes in `bits` bytes
    assert packed.dtype == torch.uint8 and packed.shape == (7, per_row)
    stream = np.packbits(((codes.numpy()[..., None] >> np.arange(bits)) & 1).astype(np.uint8).reshape(7, -1), axis=1,
                         bitorder="little")  # one little-endian bit stream per row
    assert np.array_equal(packed.numpy()[:, :stream.shape[1]], stream)
    assert torch.equal(unpack_bits(packed, bits, 13), codes)
    with pytest.raises(ValueError):
        pack_bits(torch.full((2, 3), 2 ** bits), bits)


def test_popcount_forward_is_eq4_on_packed_bits():
    torch.manual_seed(0)
    layer, x = PopcountLinear(70, 9), torch.randn(5, 70)  # 70: padded to two 64-bit words
    packed = PackedPopcountLinear(layer)
    assert packed.weight_nbytes == 9 * 16
    xb, wb = (x > layer.tau), (layer.weight > layer.tau)
    eq4 = (xb[:, None, :] != wb[None]).sum(-1).float() - 70 / 2  # popcount(x_b XOR w_b) - d/2
    assert torch.equal(packed(x), eq4)
    torch.testing.assert_close(layer(x).detach(), eq4)
    assert pack_signs(torch.ones(1, 70)).dtype == np.uint64


@pytest.mark.parametrize("name", FAKE_QUANT)
def test_packed_and_fake_quant_logits_agree_on_esc50(name, trained, fold4):
    model, X = trained[name], fold4[2]
    with torch.no_grad():
        fake = model(X)
    packed = model.packed()(X)
    assert (packed - fake).abs().max() <= 1e-4
    assert torch.equal(packed.argmax(1), fake.argmax(1))


def test_packed_bytes_meet_the_targets(trained):
    fp32 = trained["FP32-Base"].packed().nbytes
    assert fp32 == 4 * sum(p.numel() for p in trained["FP32-Base"].parameters())
    sizes = {}
    for name, bound in [("Q1-Base", 28), ("Q2-Base", 14), ("Q4-Base", 7), ("Q8-Base", 3.9), ("Q16-Base", 1.95),
                        ("BitNet-Base", 14), ("Popcount-Base", 28)]:
        p = trained[name].packed()
        assert p.quantized_nbytes * bound <= p.quantized_fp32_nbytes, name
        sizes[name] = p.nbytes
        assert p.nbytes < fp32
    assert sizes["Q1-Base"] < sizes["Q2-Base"] < sizes["Q4-Base"] < sizes["Q8-Base"] < sizes["Q16-Base"]


def test_ptq_model_agrees_with_fp32_on_most_predictions(fold4):
    Xtr, ytr, Xte, _ = fold4
    torch.manual_seed(0)
    fp32 = train(create_model("Q8-Base-PTQ", Xtr.shape[1], 5), Xtr, ytr, steps=80)
    before = {k: v.clone() for k, v in fp32.state_dict().items()}
    int8 = fp32.after_training()
    with torch.no_grad():
        agree = (int8(Xte).argmax(1) == fp32(Xte).argmax(1)).float().mean().item()
    assert agree >= 0.9
    assert int8(Xte).argmax(1).unique().numel() > 1  # a real classifier, not a constant
    assert all(torch.equal(before[k], v) for k, v in fp32.state_dict().items())  # the FP32 model is untouched
    assert 3.5 * int8.nbytes < 4 * sum(p.numel() for p in fp32.parameters())
    assert int8.packed() is int8


@pytest.mark.parametrize("bits", [0, 17, 33, 4.0, True, "4"])
def test_bad_bit_widths_are_rejected_clearly(bits):
    with pytest.raises(ConfigError, match="from 1 to 16"):
        BitLinear(8, 4, bits=bits)


def test_bad_configs_are_rejected_clearly():
    with pytest.raises(ConfigError, match="unknown variant 'Q3-Bass'"):
        create_model("Q3-Bass", 16, 5)
    with pytest.raises(ConfigError, match="for bits=3 use Q3-Base"):
        create_model("Q4-Base", 16, 5, bits=3)
    with pytest.raises(ConfigError, match="from 1 to 16"):
        create_model("Q17-Base", 16, 5)
    with pytest.raises(ConfigError, match="Q8-Base"):
        create_model("Q4-Base", 16, 5, bits=8)
    with pytest.raises(ConfigError, match="tau"):
        create_model("Popcount-Base", 16, 5, tau=-0.1)
    with pytest.raises(ConfigError, match="backend"):
        create_model("Q8-Base-PTQ", 16, 5, backend="tensorrt")
    with pytest.raises(ConfigError, match="hidden"):
        MLPExpert(16, 5, hidden=())
    with pytest.raises(ConfigError, match="dropout"):
        MLPExpert(16, 5, dropout=1.5)

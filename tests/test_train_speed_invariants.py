"""What the training speed-ups (issues 12, 13) must not change: STE gradients, the routed-rows-only training of
MoE-C experts, dropout's distribution, determinism. Small random models; no dataset needed."""
import copy

import pytest
import torch
from torch.nn import functional as F

from qmoe.experiments.train import fit
from qmoe.models.experts import Dropout
from qmoe.models.moe import QuantizedMoE
from qmoe.models.packing import PackedMLP
from qmoe.models.quantizers import (BitLinear, PopcountLinear, TernaryLinear, binarize, codes_product, int8_activations,
                                    int8_product_is_exact, kbit_weights, ternary_activations, ternary_weights)
from qmoe.models.registry import TrainConfig, create_model
from qmoe.models.routing import top_k_weights

EXPERTS = ("BitNet-Base", "Q4-Base", "Q8-Base")


def _ste(codes, latent):
    return codes + (latent - latent.detach())


def _reference(layer, x):
    """The layers as written before the speed-up: autograd through `codes + (latent - latent.detach())`."""
    if isinstance(layer, PopcountLinear):
        return -0.5 * F.linear(_ste(binarize(x, layer.tau), x), _ste(binarize(layer.weight, layer.tau), layer.weight))
    x = layer.norm(x)
    if isinstance(layer, BitLinear):
        xc, step = int8_activations(x)
        wc, sw = kbit_weights(layer.weight, layer.bits)
        return F.linear(_ste(xc, x / step), _ste(wc, layer.weight / sw)) * (sw * step) + layer.bias
    wc, alpha = ternary_weights(layer.weight, layer.weight_delta)
    xa = ternary_activations(x, layer.act_delta)
    return F.linear(_ste(xa, x), _ste(wc, layer.weight / alpha[:, None])) * alpha + layer.bias


LAYERS = [lambda: BitLinear(96, 32, bits=4), lambda: BitLinear(96, 32, bits=8), lambda: BitLinear(96, 32, bits=16),
          lambda: TernaryLinear(96, 32), lambda: PopcountLinear(96, 32)]


@pytest.mark.parametrize("make", LAYERS)
@pytest.mark.parametrize("dead_rows", [False, True])
def test_codes_linear_matches_the_autograd_ste(make, dead_rows):
    """Forward value and STE gradients equal the old formulation, also when some rows get no gradient (the
    backward then skips them)."""
    torch.manual_seed(0)
    layer, x, g = make(), torch.randn(16, 96) * 3, torch.randn(16, 32)
    if dead_rows:
        g[::3] = 0
    results = []
    for forward in (layer, lambda v: _reference(layer, v)):
        layer.zero_grad()
        xi = x.clone().requires_grad_(True)
        y = forward(xi)
        (y * g).sum().backward()
        bias = (layer.bias.grad,) if hasattr(layer, "bias") else ()
        results.append((y.detach(), xi.grad, layer.weight.grad) + bias)
    for ours, ref in zip(*results):
        torch.testing.assert_close(ours, ref, rtol=1e-5, atol=1e-5)
    if dead_rows:
        assert (results[0][1][::3] == 0).all()


def test_int8_product_is_exact_and_matches_the_float_product():
    torch.manual_seed(0)
    xc = torch.randint(-127, 128, (40, 300)).float()
    wc = torch.randint(-8, 8, (20, 300)).float()
    assert isinstance(int8_product_is_exact(), bool)
    assert torch.equal(codes_product(xc, wc, int8=True), F.linear(xc, wc))  # sums < 2^24: float is exact too
    assert codes_product(xc[:0], wc, int8=True).shape == (0, 20)


def test_dropout_keeps_the_distribution_and_is_packed_away():
    torch.manual_seed(0)
    d, x = Dropout(0.195), torch.ones(400, 500)
    y = d.train()(x)
    kept = (y != 0).float().mean().item()
    assert abs(kept - 0.805) < 0.005
    assert torch.allclose(y[y != 0], torch.tensor(1 / 0.805))
    assert torch.equal(d.eval()(x), x) and isinstance(d, torch.nn.Dropout)
    expert = create_model("Q4-Base", 32, 5)
    assert not any(isinstance(m, torch.nn.Dropout) for m in PackedMLP(expert).modules())


def _two_pass_forward(moe: QuantizedMoE, x):
    """MoE-C training forward as written before: experts once without grad for Eq. 8's KL, then again with grad
    on the rows routed to each."""
    p = moe._router_probs(x)
    with torch.no_grad():
        q = torch.softmax(moe.expert_logits(x), -1)
    return moe._dispatch(x, top_k_weights(moe._curious(p, q)[0], moe.top_k))


@pytest.mark.parametrize("top_k", [1, 2])
def test_moe_c_single_pass_trains_each_expert_on_its_routed_rows_only(top_k):
    """Without dropout both forms are the same function: equal outputs and gradients, so every expert's gradient
    comes from its routed rows alone (the old form ran each expert only on those)."""
    torch.manual_seed(0)
    moe = create_model("BitNet-Q4/8-QMoE-C@0.3", 48, 5, top_k=top_k, router_dropout=0.0,
                       expert_options={"hidden": (32, 16), "dropout": 0.0}).train()
    twin = copy.deepcopy(moe)
    x = torch.randn(64, 48) * 2
    g = torch.randn(64, 5)
    (moe(x) * g).sum().backward()
    (_two_pass_forward(twin, x) * g).sum().backward()
    for (name, a), b in zip(moe.named_parameters(), twin.parameters()):
        torch.testing.assert_close(a.grad, b.grad, rtol=1e-4, atol=1e-6, msg=name)
    with torch.no_grad():
        torch.testing.assert_close(moe(x), _two_pass_forward(twin, x), rtol=1e-5, atol=1e-6)


def _tiny_fit(name: str, seed: int):
    gen = torch.Generator().manual_seed(123)
    X = torch.randn(300, 40, generator=gen)
    y = (X[:, :5].argmax(1)).numpy()
    X = X.numpy()
    torch.manual_seed(seed)
    options = {"expert_options": {"hidden": (32,)}} if "QMoE" in name else {"hidden": (32,)}
    model = create_model(name, 40, 5, **options)
    cfg = TrainConfig(optimizer="adam", lr=1e-3, batch_size=64, max_epochs=4, patience=30)
    history = fit(model, cfg, X[:240], y[:240], X[240:], y[240:], 5, seed=seed, progress=False)
    with torch.no_grad():
        return model(torch.as_tensor(X[240:])), history


@pytest.mark.parametrize("name", ["Q4-Base", "BitNet-Base", "BitNet-Q4/8-QMoE-C@0.3"])
def test_fit_is_deterministic_given_the_seed(name):
    (a, ha), (b, hb) = _tiny_fit(name, 3), _tiny_fit(name, 3)
    assert torch.equal(a, b) and ha["val_loss"] == hb["val_loss"]

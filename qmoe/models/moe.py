"""The paper's quantized Mixture-of-Experts and its curiosity-driven Bayesian router (Sec. 3.3, 4.3).

Heterogeneous experts are built from the variant registry by name; a small router picks the top-k
of them per sample (Eq. 5, 6). The "-C" variants make the router Bayesian (routing on the mean of
10 Monte Carlo dropout passes) and reweight it by curiosity (Eq. 7, 8).

Design choices (paper silent or reference different; see METHOD.md / reference-notes.md):
- Eq. 6 is taken literally: y = sum over the top-k of p_i * E_i(z), E_i the expert's logits and
  p_i the (curiosity-adjusted) routing probability, not renormalised over the top-k and not divided
  by k (the reference divides by k; for k = 1, the paper's setting, both agree). Renormalising
  would make top-1 weights exactly 1 and cut the router off from the classification gradient.
- Curiosity is applied in training as well as at inference (`curiosity_in_training=True`): the
  experts are then trained on the samples the curious router will really send them, and the
  router learns with the weights it is deployed with. The KL term is a stop-gradient routing prior
  (experts are not trained to disagree). `curiosity_in_training=False` applies it at inference only.
- During training the router makes one ordinary dropout pass (dropout is its Bayesian
  regulariser); the 10 Monte Carlo passes are the inference-time posterior average.
- "Uniform routing" (Table 3/4's baseline) is the paper's word for the learned top-k router without
  the Bayesian curiosity term, which is also the reference's baseline: `BitNet-Q4/8-QMoE-uniform`
  is that model (learned deterministic router, no MC, no curiosity) with the BitNet/Q4/Q8 experts.
"""
from __future__ import annotations

import copy
import inspect
from typing import Sequence

import numpy as np
import torch
from torch import nn

from ..core.errors import ConfigError
from .registry import MOE_TRAIN, VariantSpec, create_model, get_variant, register_family, register_variant
from .routing import (CURIOSITY_MODES, Router, bald, combine, curious, entropy, expert_kl, load_balance_loss,
                      routing_probs, top_k_weights)


class QuantizedMoE(nn.Module):
    """Top-k Mixture of registry experts with an optional Bayesian, curiosity-driven router.

    experts: variant names of single models, e.g. ("BitNet-Base", "Q4-Base", "Q8-Base").
    bayesian: route on the mean of `mc_samples` MC-dropout router passes at inference.
    alpha: curiosity strength of Eq. 8 (0 = none). curiosity_mode: "paper" (Eq. 8 with the experts'
    class distributions), "reference-main" (MC spread only logged, routing unchanged),
    "reference-rebuttal" (the reference's KL of the routing vector vs uniform: a no-op).
    expert_options: keyword arguments for every expert's builder (e.g. a smaller `hidden`).
    """

    def __init__(self, in_dim: int, n_classes: int, experts: Sequence[str], *, top_k: int = 1,
                 temperature: float = 1.0, bayesian: bool = False, mc_samples: int = 10, alpha: float = 0.0,
                 curiosity_mode: str = "paper", curiosity_in_training: bool = True,
                 router_dropout: float = 0.2, load_balance: float = 1e-3, mc_seed: int = 0,
                 expert_options: dict | None = None):
        super().__init__()
        experts = _check_experts(experts)
        n = len(experts)
        self._check_options(n, top_k=top_k, temperature=temperature, alpha=alpha, mc_samples=mc_samples,
                            curiosity_mode=curiosity_mode, router_dropout=router_dropout, load_balance=load_balance)
        self.in_dim, self.n_classes, self.expert_names = in_dim, n_classes, experts
        self.top_k, self.temperature, self.alpha = int(top_k), float(temperature), float(alpha)
        self.bayesian, self.mc_samples, self.mc_seed = bool(bayesian), int(mc_samples), int(mc_seed)
        self.curiosity_mode, self.curiosity_in_training = curiosity_mode, bool(curiosity_in_training)
        self.load_balance = float(load_balance)
        self.experts = nn.ModuleList(create_model(name, in_dim, n_classes, **(expert_options or {}))
                                     for name in experts)
        self.router = Router(in_dim, n, dropout=router_dropout)
        self._aux: torch.Tensor | None = None

    @staticmethod
    def _check_options(n: int, *, top_k: int = 1, temperature: float = 1.0, alpha: float = 0.0, mc_samples: int = 10,
                       curiosity_mode: str = "paper", router_dropout: float = 0.2, load_balance: float = 1e-3,
                       **_) -> None:
        """Refuse a setting an MoE of `n` experts cannot have, saying why (the constructor and `moe_parts`)."""
        if isinstance(top_k, bool) or not isinstance(top_k, (int, np.integer)) or not 1 <= top_k <= n:
            raise ConfigError(f"top_k must be an integer between 1 and the number of experts ({n}); got {top_k!r}")
        if not temperature > 0:
            raise ConfigError(f"routing temperature T must be > 0; got {temperature!r}")
        if not alpha >= 0:
            raise ConfigError(f"curiosity strength alpha must be >= 0 (0 = no curiosity); got {alpha!r}")
        if isinstance(mc_samples, bool) or not isinstance(mc_samples, (int, np.integer)) or mc_samples < 1:
            raise ConfigError(f"mc_samples (Monte Carlo dropout passes) must be an integer >= 1; got {mc_samples!r}")
        if curiosity_mode not in CURIOSITY_MODES:
            raise ConfigError(f"unknown curiosity_mode {curiosity_mode!r}; choose one of {', '.join(CURIOSITY_MODES)}")
        if not 0 <= router_dropout < 1:
            raise ConfigError(f"router_dropout must be in [0, 1); got {router_dropout!r}")
        if not load_balance >= 0:
            raise ConfigError(f"load_balance weight must be >= 0; got {load_balance!r}")

    # -- routing ---------------------------------------------------------------------------------
    @property
    def routes_on_mc_mean(self) -> bool:
        """The reference's main branch computes the MC passes but routes on an ordinary pass."""
        return self.bayesian and self.curiosity_mode != "reference-main"

    def _curiosity_on(self) -> bool:
        return self.alpha > 0 and self.curiosity_mode != "reference-main" and (
            not self.training or self.curiosity_in_training)

    @property
    def runs_every_expert(self) -> bool:
        """Whether `forward` (in the current mode) runs every expert on every row: Eq. 8 as written needs every
        expert's class distribution. Its output is then exactly the routing record's `class_probs` (before softmax)."""
        return self._curiosity_on() and self.curiosity_mode == "paper"

    def _router_probs(self, x: torch.Tensor) -> torch.Tensor:
        if self.training or not self.routes_on_mc_mean:
            return routing_probs(self.router(x), self.temperature)
        return routing_probs(self.router.mc_logits(x, self.mc_samples, self.mc_seed), self.temperature).mean(0)

    def _curious(self, p: torch.Tensor, expert_probs: torch.Tensor | None):
        """(p_cur, KL used by Eq. 8), or p unchanged when curiosity is off."""
        if not self._curiosity_on():
            return p, torch.zeros_like(p)
        return curious(p, expert_probs, self.alpha, self.curiosity_mode)

    def expert_logits(self, x: torch.Tensor) -> torch.Tensor:
        """(B, N, C): every expert on every sample."""
        return torch.stack([e(x) for e in self.experts], dim=1)

    def _dispatch(self, x: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
        """Eq. 6 with each expert run only on the rows routed to it (sparse top-k)."""
        out = x.new_zeros(x.shape[0], self.n_classes)
        for i, expert in enumerate(self.experts):
            rows = (weights[:, i] > 0).nonzero(as_tuple=True)[0]
            if len(rows):
                out = out.index_add(0, rows, weights[rows, i:i + 1] * expert(x[rows]).to(out.dtype))
        return out

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self._check_input(x)
        p = self._router_probs(x)
        if self.training:
            self._aux = self.load_balance * load_balance_loss(p)
        if not self.runs_every_expert:
            return self._dispatch(x, top_k_weights(self._curious(p, None)[0], self.top_k))
        # Eq. 8 needs every expert's class distribution for every sample, so every expert runs on every row,
        # once. The KL reads them detached (a stop-gradient routing prior); the output combines the routed ones.
        # In training, a row's weight is 0 for every expert but its top-k, so its gradient reaches only the
        # experts it is routed to: each expert trains on its routed rows alone (and the quantized layers' backward
        # skips the zero rows, so it costs what the routed rows cost).
        logits = self.expert_logits(x)
        weights = top_k_weights(self._curious(p, torch.softmax(logits.detach(), -1))[0], self.top_k)
        return combine(weights, logits)

    def auxiliary_loss(self) -> torch.Tensor:
        """Load-balancing term of the last training forward (weight `load_balance`, paper 1e-3).

        Handed over once (then forgotten), so no autograd graph stays attached to the module.
        """
        aux, self._aux = self._aux, None
        return aux if aux is not None else torch.zeros(())

    # -- explanation -----------------------------------------------------------------------------
    @torch.no_grad()
    def routing_record(self, x) -> dict[str, np.ndarray]:
        """Per-sample routing details for a (D,) or (B, D) embedding batch, in inference mode.

        router_probs: routing before curiosity (MC mean for Bayesian variants, else one pass);
        curious_probs: after Eq. 8; routing_weights: the Eq. 6 weights; chosen_expert / top_k_experts.
        mc_mean, mc_std: the router's Monte Carlo dropout passes (computed for every variant; only
        Bayesian ones route on them). predictive/expected_entropy and mutual_information: BALD over
        the class predictions of those passes, each routed like the final decision (epistemic
        uncertainty due to the router, 0 without dropout). experts_entropy: Eq. 7's H(y|z) of the
        mean expert distribution; expert_kl: KL(expert || mean) per expert; expert_probs (B, N, C).
        prediction / confidence / class_probs: of the MoE output, as `forward` gives it.
        """
        x = torch.as_tensor(x, dtype=torch.float32)
        x = self._check_input(x.unsqueeze(0) if x.ndim == 1 else x)
        was_training = self.training
        self.eval()
        try:
            logits = self.expert_logits(x)
            mc = routing_probs(self.router.mc_logits(x, self.mc_samples, self.mc_seed), self.temperature)
            p = mc.mean(0) if self.routes_on_mc_mean else routing_probs(self.router(x), self.temperature)
            return self.record_from(p, mc, logits)
        finally:
            self.train(was_training)

    @torch.no_grad()
    def record_from(self, router_probs, mc_probs, expert_logits) -> dict[str, np.ndarray]:
        """The routing record (see `routing_record`) from its primitives: the routing probabilities before
        curiosity (B, N), the Monte Carlo passes' (S, B, N) and every expert's logits (B, N, C). They come from
        the engine (`routing_record`) or from the ONNX graph's explain outputs; the rest is computed here, once."""
        p, mc, logits = (torch.as_tensor(np.asarray(v), dtype=torch.float32) for v in (router_probs, mc_probs,
                                                                                       expert_logits))
        was_training = self.training
        self.eval()  # curiosity's on/off switch depends on the mode
        try:
            q = torch.softmax(logits, -1)
            p_cur, kl_used = self._curious(p, q)
            weights = top_k_weights(p_cur, self.top_k)
            class_probs = torch.softmax(combine(weights, logits), -1)
            mc_cur, _ = self._curious(mc, q)
            predictive, expected, mutual = bald(torch.softmax(combine(top_k_weights(mc_cur, self.top_k), logits), -1))
        finally:
            self.train(was_training)
        top = p_cur.topk(self.top_k, dim=-1).indices
        record = {
            "chosen_expert": top[:, 0], "top_k_experts": top,
            "router_probs": p, "curious_probs": p_cur, "routing_weights": weights,
            "routing_entropy": entropy(p_cur), "curiosity_kl": kl_used, "expert_kl": expert_kl(q),
            "mc_mean": mc.mean(0), "mc_std": mc.std(0, correction=0),
            "experts_entropy": entropy(q.mean(1)),
            "predictive_entropy": predictive, "expected_entropy": expected, "mutual_information": mutual,
            "prediction": class_probs.argmax(-1), "confidence": class_probs.max(-1).values,
            "class_probs": class_probs, "expert_probs": q,
        }
        return {k: v.cpu().numpy() for k, v in record.items()}

    # -- life cycle ------------------------------------------------------------------------------
    def after_training(self) -> "QuantizedMoE":
        """Post-training quantization of the experts that have it (the int8 PTQ expert)."""
        self.experts = nn.ModuleList(e.after_training() if hasattr(e, "after_training") else e
                                     for e in self.experts)
        return self

    def packed(self) -> "QuantizedMoE":
        """The deployable MoE: each expert in its packed form; nbytes = experts' + FP32 router bytes."""
        self._aux = None  # a stale training graph cannot be deep-copied
        twin = copy.deepcopy(self).eval()
        twin.experts = nn.ModuleList(_packed_expert(e) for e in twin.experts)
        twin.nbytes = _state_bytes(twin.router) + sum(int(e.nbytes) for e in twin.experts)
        return twin

    def _check_input(self, x: torch.Tensor) -> torch.Tensor:
        if x.ndim != 2 or x.shape[1] != self.in_dim:
            raise ConfigError(f"this MoE takes {self.in_dim}-d embeddings as (batch, {self.in_dim}); "
                              f"got shape {tuple(x.shape)}")
        return x

    def extra_repr(self) -> str:
        return (f"experts={list(self.expert_names)}, top_k={self.top_k}, T={self.temperature}, "
                f"bayesian={self.bayesian}, mc_samples={self.mc_samples}, alpha={self.alpha}, "
                f"curiosity_mode={self.curiosity_mode!r}, curiosity_in_training={self.curiosity_in_training}")


def _check_experts(experts) -> tuple[str, ...]:
    if isinstance(experts, str) or not isinstance(experts, Sequence):
        raise ConfigError(f"experts must be a list of variant names, e.g. ['BitNet-Base', 'Q4-Base']; got {experts!r}")
    if len(experts) == 0:
        raise ConfigError("an MoE needs at least one expert (N >= 1); got an empty expert list")
    for name in experts:
        if get_variant(name).family != "single":  # unknown names raise ConfigError listing the known ones
            raise ConfigError(f"expert {name!r} is not a single model; MoE experts must be single-model variants")
    return tuple(experts)


def _state_bytes(module: nn.Module) -> int:
    """Bytes of a module's stored tensors, including the packed tuples of dynamically quantized layers."""
    total = 0
    for v in module.state_dict().values():
        for t in (v if isinstance(v, tuple) else (v,)):
            if torch.is_tensor(t):
                total += t.numel() * t.element_size()
    return total


def _packed_expert(expert: nn.Module) -> nn.Module:
    if hasattr(expert, "packed"):
        return expert.packed()
    if hasattr(expert, "nbytes"):  # already a packed/deployable form
        return expert
    expert.nbytes = _state_bytes(expert)  # no packed form: it is deployed as stored
    return expert


_MOE_OPTIONS = set(inspect.signature(QuantizedMoE).parameters) - {"in_dim", "n_classes"}


def build_moe(in_dim: int, n_classes: int, **options) -> QuantizedMoE:
    """A QuantizedMoE; every constructor keyword can be overridden through create_model."""
    unknown = set(options) - _MOE_OPTIONS
    if unknown:
        raise ConfigError(f"unknown MoE option(s) {', '.join(sorted(unknown))}; known: {', '.join(sorted(_MOE_OPTIONS))}")
    return QuantizedMoE(in_dim, n_classes, **options)


# -- the paper's variants (expert lists are data: names resolved in the registry at build time) ----
BITNET_Q4_Q8 = ("BitNet-Base", "Q4-Base", "Q8-Base")
BITNET_Q4_Q8_Q16 = ("BitNet-Base", "Q4-Base", "Q8-Base", "Q16-Base")
BITNET_Q8_Q16_PTQ = ("BitNet-Base", "Q8-Base", "Q16-Base", "Q8-Base-PTQ")
BITNET_Q8PTQ = ("BitNet-Base", "Q8-Base-PTQ")

PAPER_ALPHAS = (0.2, 0.3)
UNIFORM_BASELINE = "BitNet-Q4/8-QMoE-uniform"

_PLAIN = {
    "BitNet-Q4/8/16-QMoE": BITNET_Q4_Q8_Q16,
    "BitNet-Q8/16-PTQ-QMoE": BITNET_Q8_Q16_PTQ,
    "BitNet-Q8PTQ-QMoE": BITNET_Q8PTQ,
}
_CURIOUS = {
    "BitNet-Q4/8-QMoE-C": BITNET_Q4_Q8,
    "BitNet-Q4/8/16-QMoE-C": BITNET_Q4_Q8_Q16,
    "BitNet-Q8/16-PTQ-QMoE-C": BITNET_Q8_Q16_PTQ,
    "BitNet-Q8PTQ-QMoE-C": BITNET_Q8PTQ,
}


def _register(name: str, description: str, **options) -> None:
    register_variant(name, train=MOE_TRAIN, family="moe", description=description, **options)(build_moe)


for _name, _experts in _PLAIN.items():
    _register(_name, f"MoE of {', '.join(_experts)}; learned top-1 router, no curiosity", experts=_experts)
_register(UNIFORM_BASELINE, "Table 4's 'Baseline MoE (uniform)': BitNet, Q4, Q8 experts, learned top-1 router "
          "without the Bayesian curiosity term (the paper's 'uniform routing', the reference's baseline)",
          experts=BITNET_Q4_Q8)
for _name, _experts in _CURIOUS.items():
    for _alpha in PAPER_ALPHAS:
        _register(f"{_name}@{_alpha}", f"MoE-C of {', '.join(_experts)}; Bayesian router (10 MC-dropout passes) "
                  f"with curiosity Eq. 8 at alpha={_alpha}", experts=_experts, bayesian=True, alpha=_alpha)


# -- MoEs named by their parts: "MoE(BitNet-Base, Q4-Base, Q8-Base | alpha=0.25, T=1, top_k=1, mc=10, bayesian=yes,
#    curiosity=paper, in_training=yes)". A sweep over MoE options or expert sets names each point this way: the name
#    says everything that differs from another point, so the cache key (the name and the full builder options) does.
_PARTS = (  # (part in the name, QuantizedMoE keyword), in the order the canonical name lists them
    ("alpha", "alpha"), ("T", "temperature"), ("top_k", "top_k"), ("mc", "mc_samples"), ("bayesian", "bayesian"),
    ("curiosity", "curiosity_mode"), ("in_training", "curiosity_in_training"))
MOE_PART_DEFAULTS = {kw: inspect.signature(QuantizedMoE).parameters[kw].default for _, kw in _PARTS}
_YES_NO = {"yes": True, "no": False}


def _number(x) -> str:
    """The shortest text that reads back as the same float (0.25, 1, 1e-05): names must round-trip."""
    text = repr(float(x))
    return text[:-2] if text.endswith(".0") else text


def moe_parts(experts, **options) -> tuple[tuple[str, ...], dict]:
    """Validated (experts, full options) of an MoE named by its parts; unnamed options take their defaults.

    Options are QuantizedMoE keywords: alpha, temperature, top_k, mc_samples, bayesian, curiosity_mode,
    curiosity_in_training. ConfigError says what is wrong, before anything is built."""
    experts = _check_experts(experts)
    if unknown := set(options) - set(MOE_PART_DEFAULTS):
        raise ConfigError(f"unknown MoE part(s) {', '.join(sorted(unknown))}; an MoE name holds "
                          f"{', '.join(MOE_PART_DEFAULTS)} (other options go in a run's options)")
    o = {**MOE_PART_DEFAULTS, **options}
    for kw in ("alpha", "temperature"):
        v = o[kw]
        if isinstance(v, bool) or not isinstance(v, (int, float, np.integer, np.floating)) or not np.isfinite(v):
            raise ConfigError(f"MoE {kw} must be a finite number; got {v!r}")
        o[kw] = float(v)
    for kw in ("top_k", "mc_samples"):
        if isinstance(o[kw], (np.integer,)):
            o[kw] = int(o[kw])
    for kw in ("bayesian", "curiosity_in_training"):
        if not isinstance(o[kw], (bool, np.bool_)):
            raise ConfigError(f"MoE {kw} must be True or False; got {o[kw]!r}")
        o[kw] = bool(o[kw])
    QuantizedMoE._check_options(len(experts), **o)
    return experts, o


def moe_name(experts, **options) -> str:
    """The canonical name of an MoE built from its parts (every part listed); `create_model(moe_name(...))` builds
    it and `get_variant(name).options` gives the parts back."""
    experts, o = moe_parts(experts, **options)
    yes_no = {True: "yes", False: "no"}
    text = {"alpha": _number(o["alpha"]), "temperature": _number(o["temperature"]), "top_k": str(o["top_k"]),
            "mc_samples": str(o["mc_samples"]), "bayesian": yes_no[o["bayesian"]],
            "curiosity_mode": o["curiosity_mode"], "curiosity_in_training": yes_no[o["curiosity_in_training"]]}
    return f"MoE({', '.join(experts)} | {', '.join(f'{part}={text[kw]}' for part, kw in _PARTS)})"


def _parse_part(part: str, kw: str, value: str):
    try:
        if kw in ("alpha", "temperature"):
            return float(value)
        if kw in ("top_k", "mc_samples"):
            return int(value)
    except ValueError:
        raise ConfigError(f"MoE part {part}={value!r} is not a number") from None
    if kw in ("bayesian", "curiosity_in_training"):
        if value not in _YES_NO:
            raise ConfigError(f"MoE part {part} is yes or no; got {value!r}")
        return _YES_NO[value]
    return value


@register_family(r"MoE\((?P<experts>[^|()]*)\|(?P<parts>[^()]*)\)",
                 "MoE(<experts> | alpha=, T=, top_k=, mc=, bayesian=, curiosity=, in_training=), e.g. "
                 "'MoE(BitNet-Base, Q4-Base, Q8-Base | alpha=0.25, T=1, top_k=1, mc=10, bayesian=yes, curiosity=paper, "
                 "in_training=yes)' (qmoe.models.moe.moe_name)")
def moe_from_parts(match) -> VariantSpec:
    """The spec of an MoE named by its parts. Only the canonical spelling is accepted (every part, in order, as
    `moe_name` writes it): two spellings of one model would be two cache entries. The spec's options hold every
    part, so the run's cache key covers the full options."""
    experts = [e.strip() for e in match["experts"].split(",") if e.strip()]
    options, by_part = {}, dict(_PARTS)
    for item in filter(None, (t.strip() for t in match["parts"].split(","))):
        part, sep, value = (s.strip() for s in item.partition("="))
        if not sep or part not in by_part:
            raise ConfigError(f"{match.string!r}: {item!r} is not one of {', '.join(f'{p}=' for p, _ in _PARTS)}")
        if by_part[part] in options:
            raise ConfigError(f"{match.string!r}: {part} is given twice")
        options[by_part[part]] = _parse_part(part, by_part[part], value)
    experts, options = moe_parts(experts, **options)
    if (name := moe_name(experts, **options)) != match.string:
        raise ConfigError(f"{match.string!r} is not in canonical form: write it as {name!r}")
    curious = options["alpha"] > 0 and options["curiosity_mode"] != "reference-main"
    kind = ("MoE-C: Bayesian router" if options["bayesian"] else "MoE: learned router") + (
        f", curiosity Eq. 8 ({options['curiosity_mode']}) at alpha={_number(options['alpha'])}" if curious else
        ", no curiosity")
    return VariantSpec(name, build_moe, MOE_TRAIN, "moe", None, f"{kind}; experts {', '.join(experts)}",
                       {"experts": experts, **options})

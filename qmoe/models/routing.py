"""Router and routing math of the MoE (paper Sec. 3.3, Eqs. 5-8), as small pure functions.

Shapes: B samples, N experts, C classes, S Monte Carlo samples. Routing probabilities are (B, N),
experts' class distributions (B, N, C). Everything here is differentiable torch code; the
Mixture-of-Experts module (`qmoe.models.moe`) composes it.
"""
from __future__ import annotations

import torch
from torch import nn

CURIOSITY_MODES = ("paper", "reference-main", "reference-rebuttal")
_EPS = 1e-12


class Router(nn.Module):
    """Gating network G: Linear(D,128)-ReLU-Dropout(p)-Linear(128,64)-ReLU-Linear(64,N) (paper, reference).

    Xavier-uniform weights and zero biases, as the reference initialises them. `mc_logits` runs
    the Monte Carlo dropout passes of the Bayesian router with masks drawn from a private,
    seeded generator and shared by every row of the batch: a sample's routing is then the same
    whether it is routed alone (an uploaded clip) or inside a batch, and repeatable.
    """

    def __init__(self, in_dim: int, n_experts: int, hidden=(128, 64), dropout: float = 0.2):
        super().__init__()
        h1, h2 = hidden
        self.net = nn.Sequential(nn.Linear(in_dim, h1), nn.ReLU(), nn.Dropout(dropout),
                                 nn.Linear(h1, h2), nn.ReLU(), nn.Linear(h2, n_experts))
        for m in self.net:
            if isinstance(m, nn.Linear):
                nn.init.xavier_uniform_(m.weight)
                nn.init.zeros_(m.bias)

    @property
    def dropout(self) -> float:
        return self.net[2].p

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Router logits G(z): one pass, dropout active only in training mode."""
        return self.net(x)

    def mc_masks(self, samples: int, seed: int = 0) -> torch.Tensor:
        """(S, 1, h1) inverted-dropout masks of the Monte Carlo passes, drawn from a generator seeded with `seed`."""
        p = self.dropout
        gen = torch.Generator().manual_seed(seed)
        return (torch.rand(samples, 1, self.net[0].out_features, generator=gen) >= p).float() / (1.0 - p)

    def mc_logits(self, x: torch.Tensor, samples: int, seed: int = 0) -> torch.Tensor:
        """(S, B, N) logits of `samples` stochastic passes (dropout on, whatever the module mode)."""
        hidden = self.net[:2](x)  # (B, h1): everything before the dropout is deterministic
        return self.net[3:](hidden.unsqueeze(0) * self.mc_masks(samples, seed).to(hidden))


def routing_probs(logits: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
    """Eq. 5: p_i = softmax(G(z) / T)_i."""
    return torch.softmax(logits / temperature, dim=-1)


def entropy(p: torch.Tensor, dim: int = -1) -> torch.Tensor:
    """Shannon entropy in nats along `dim` (0 log 0 = 0)."""
    return -(p * p.clamp_min(_EPS).log()).sum(dim)


def load_balance_loss(p: torch.Tensor) -> torch.Tensor:
    """Sum over experts of the squared batch-mean routing probability: 1/N at even use, 1 at collapse."""
    return (p.mean(0) ** 2).sum()


def expert_kl(expert_probs: torch.Tensor) -> torch.Tensor:
    """KL(q_i || q_bar) per expert (B, N): q_i expert i's class distribution, q_bar their mean (Eq. 7).

    Since q_bar >= q_i / N, every KL lies in [0, log N]: Eq. 8's factor exp(alpha KL) is at most N^alpha.
    """
    q = expert_probs.clamp_min(_EPS)
    q_bar = q.mean(dim=-2, keepdim=True)
    return (q * (q.log() - q_bar.log())).sum(-1)


def curious(p: torch.Tensor, expert_probs: torch.Tensor | None, alpha: float, mode: str = "paper"):
    """Eq. 8: p_i^cur proportional to p_i exp(alpha KL_i); returns (p_cur, KL used) both (B, N).

    - "paper": KL_i = KL(expert i's class distribution || mean of the experts' class distributions),
      one value per expert, so experts are reweighted differently (needs `expert_probs`).
    - "reference-rebuttal": the reference's rebuttal branch: KL(routing vector || uniform), one
      scalar per sample applied to every expert; renormalising cancels it (a no-op, kept literal).
    - "reference-main": the reference's main branch leaves routing unchanged (MC spread logged only).
    Computed in log space, so large alpha cannot overflow.
    """
    if mode == "paper":
        kl = expert_kl(expert_probs)
    elif mode == "reference-rebuttal":
        n = p.shape[-1]
        kl = (p * (p.clamp_min(_EPS) * n).log()).sum(-1, keepdim=True).expand_as(p)
    elif mode == "reference-main":
        return p, torch.zeros_like(p)
    else:
        raise ValueError(f"unknown curiosity mode {mode!r}")
    return torch.softmax(p.clamp_min(_EPS).log() + alpha * kl, dim=-1), kl


def top_k_weights(p: torch.Tensor, k: int) -> torch.Tensor:
    """Eq. 6 weights: p_i on the k most probable experts, 0 elsewhere (not renormalised)."""
    idx = p.topk(k, dim=-1).indices
    return torch.zeros_like(p).scatter(-1, idx, p.gather(-1, idx))


def bald(class_probs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(S, B, C) Monte Carlo class distributions -> predictive entropy, expected entropy, mutual information.

    Mutual information = predictive - expected entropy: the epistemic part (0 when all passes agree).
    """
    predictive = entropy(class_probs.mean(0))
    expected = entropy(class_probs).mean(0)
    return predictive, expected, (predictive - expected).clamp_min(0.0)


def combine(weights: torch.Tensor, expert_logits: torch.Tensor) -> torch.Tensor:
    """Eq. 6: y = sum_i w_i E_i(z) for (B, N) weights and (B, N, C) expert logits."""
    return (weights.unsqueeze(-1) * expert_logits).sum(-2)

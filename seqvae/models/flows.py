"""Normalizing flows on the posterior: z_T = F(z_0; h(x)) with z_0 ~ q0(z|x), the diagonal Gaussian.

log q(z_T|x) = log q0(z_0|x) - sum_t log |det dz_t/dz_{t-1}| (Rezende & Mohamed 2015), so the
reparametrisation trick still holds and every density the measures need is exact:

- ``iaf``: inverse autoregressive flow (Kingma et al. 2016, "Improved Variational Inference with
  Inverse Autoregressive Flow"), in its gated, numerically stable form. Each step reads the
  previous z and a context h(x) (the encoder's summary) through a masked autoregressive network
  (MADE, Germain et al. 2015) giving m_t and s_t; sigma_t = sigmoid(s_t) and
  z_t = sigma_t * z_{t-1} + (1 - sigma_t) * m_t, whose log-determinant is sum_i log sigma_{t,i}.
  The dimensions are reversed between steps. Sampling is one parallel pass per step; the inverse
  (needed for log q of a z drawn for another sentence, as in the whole-set MI) is sequential over
  the dimensions and computed exactly (:meth:`IAFStep.inverse`).
- ``planar``: planar flows (Rezende & Mohamed 2015), z' = z + u_hat * tanh(w.z + b) with
  (u, w, b) from h(x) for each step and u_hat constrained so that w.u_hat >= -1 (invertible);
  log |det| = log |1 + u_hat . psi(z)|, psi(z) = (1 - tanh^2(w.z + b)) w. The map has no
  closed-form inverse, so log q at a point not sampled through the flow is not available
  (``has_inverse`` is False) and the measures that need it report why they are absent.

Shapes: ... any leading dimensions, Z latent, H context (the encoder's summary), M the MADE width.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

FLOWS = ("none", "iaf", "planar")


class MADE(nn.Module):
    """A one-hidden-layer masked autoencoder (Germain et al. 2015) with a context input: outputs
    (m, s), each (..., Z), where output i depends on inputs j < i only, and on the context.

    Degrees: input i has degree i + 1; the hidden units have degrees 0 .. Z - 1 in contiguous,
    equal blocks (a degree-0 unit reads the context alone); input j feeds hidden unit k when degree(k) >= degree(j); hidden
    unit k feeds output i when degree(i) > degree(k)."""

    def __init__(self, *, latent_dim: int, context_dim: int, hidden_dim: int, gate_bias: float = 2.0) -> None:
        super().__init__()
        self.latent_dim = latent_dim
        degrees_in = torch.arange(1, latent_dim + 1)
        degrees_hidden = torch.arange(hidden_dim) * latent_dim // hidden_dim
        self.register_buffer("mask_in", (degrees_hidden[:, None] >= degrees_in[None, :]).float(), persistent=False)
        mask_out = (degrees_in[:, None] > degrees_hidden[None, :]).float()  # (Z, M)
        self.register_buffer("mask_out", torch.cat([mask_out, mask_out]), persistent=False)  # (2Z, M): m then s
        self.register_buffer("degrees_hidden", degrees_hidden, persistent=False)
        bounds = torch.searchsorted(degrees_hidden, torch.arange(latent_dim + 1)).tolist()
        self.units_of_degree = [slice(bounds[d], bounds[d + 1]) for d in range(latent_dim)]
        """The hidden units of each degree, a contiguous block each."""
        self.input = nn.Linear(latent_dim, hidden_dim, bias=False)
        self.context = nn.Linear(context_dim, hidden_dim)
        self.output = nn.Linear(hidden_dim, 2 * latent_dim)
        with torch.no_grad():  # sigma = sigmoid(s) starts near 1: each step starts near the identity
            self.output.bias[latent_dim:] += gate_bias

    def context_hidden(self, context: torch.Tensor) -> torch.Tensor:
        """The context's share of the hidden pre-activation (..., M), computed once per sentence."""
        return self.context(context)

    def forward(self, z: torch.Tensor, context_hidden: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        hidden = F.elu(F.linear(z, self.input.weight * self.mask_in) + context_hidden)
        out = F.linear(hidden, self.output.weight * self.mask_out, self.output.bias)
        return out[..., : self.latent_dim], out[..., self.latent_dim :]


class IAFStep(nn.Module):
    """One gated IAF step: z' = sigma * z + (1 - sigma) * m, (m, s) = MADE(z, h), sigma = sigmoid(s)."""

    def __init__(self, *, latent_dim: int, context_dim: int, hidden_dim: int) -> None:
        super().__init__()
        self.made = MADE(latent_dim=latent_dim, context_dim=context_dim, hidden_dim=hidden_dim)

    def forward(self, z: torch.Tensor, context_hidden: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """z (..., Z) -> z' (..., Z) and log |det dz'/dz| (...)."""
        m, s = self.made(z, context_hidden)
        log_sigma = F.logsigmoid(s)
        sigma = log_sigma.exp()
        return sigma * z + (1.0 - sigma) * m, log_sigma.sum(-1)

    @torch.no_grad()
    def inverse(self, target: torch.Tensor, context_hidden: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The z with forward(z) = target, and the forward log-determinant at it, exactly.

        Dimension i of z follows from target_i once m_i and s_i are known, and they depend on
        z_0 .. z_{i-1} only, so the dimensions are solved in order. The hidden units of degree d
        read inputs below d, so they are complete when dimension d is reached: each is computed
        once, and its contribution to every output is added then (Z small matrix products in all,
        instead of Z passes of the whole network). ``target`` and ``context_hidden`` broadcast
        against each other (one z against many sentences' contexts)."""
        made = self.made
        latent = made.latent_dim
        shape = torch.broadcast_shapes(target.shape[:-1], context_hidden.shape[:-1])
        z = target.new_zeros(*shape, latent)
        m = made.output.bias[:latent].expand(*shape, latent).clone()  # the outputs' pre-sums so far
        s = made.output.bias[latent:].expand(*shape, latent).clone()
        weight_in = made.input.weight * made.mask_in  # (M, Z)
        weight_out = made.output.weight * made.mask_out  # (2Z, M)
        log_det = target.new_zeros(shape)
        for d in range(latent):
            units = made.units_of_degree[d]
            if units.stop > units.start:
                pre = context_hidden[..., units] + (z[..., :d] @ weight_in[units, :d].T if d else 0.0)
                hidden = F.elu(pre)  # complete: these units read z_0 .. z_{d-1} only
                later = slice(d, latent)  # their share of the outputs not yet solved (degree > d)
                m[..., later] += hidden @ weight_out[d:latent, units].T
                s[..., later] += hidden @ weight_out[latent + d :, units].T
            log_sigma = F.logsigmoid(s[..., d])
            sigma = log_sigma.exp()
            z[..., d] = (target[..., d] - (1.0 - sigma) * m[..., d]) / sigma
            log_det += log_sigma
        return z, log_det


class InverseAutoregressiveFlow(nn.Module):
    """``steps`` gated IAF steps with the dimensions reversed between them."""

    has_inverse = True

    def __init__(self, *, latent_dim: int, context_dim: int, steps: int, hidden_dim: int) -> None:
        super().__init__()
        self.steps = nn.ModuleList(
            IAFStep(latent_dim=latent_dim, context_dim=context_dim, hidden_dim=hidden_dim) for _ in range(steps)
        )

    def prepare(self, context: torch.Tensor) -> list[torch.Tensor]:
        """What each step needs of the context (..., H): its hidden pre-activation share."""
        return [step.made.context_hidden(context) for step in self.steps]

    def forward(self, z: torch.Tensor, prepared: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        """z_0 (..., Z) -> z_T (..., Z) and sum_t log |det dz_t/dz_{t-1}| (...)."""
        log_det = z.new_zeros(z.shape[:-1])
        for index, (step, context_hidden) in enumerate(zip(self.steps, prepared)):
            if index:
                z = z.flip(-1)
            z, step_log_det = step(z, context_hidden)
            log_det = log_det + step_log_det
        return z, log_det

    @torch.no_grad()
    def inverse(self, z: torch.Tensor, prepared: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        """z_T -> z_0 and the forward log-determinant at z_0, exactly (see :meth:`IAFStep.inverse`)."""
        log_det = None
        for index in reversed(range(len(self.steps))):
            z, step_log_det = self.steps[index].inverse(z, prepared[index])
            log_det = step_log_det if log_det is None else log_det + step_log_det
            if index:
                z = z.flip(-1)
        if log_det is None:
            log_det = z.new_zeros(z.shape[:-1])
        return z, log_det


class PlanarFlow(nn.Module):
    """``steps`` planar maps whose parameters (u, w, b) are linear functions of the context."""

    has_inverse = False

    def __init__(self, *, latent_dim: int, context_dim: int, steps: int) -> None:
        super().__init__()
        self.latent_dim, self.num_steps = latent_dim, steps
        self.parameters_from_context = nn.Linear(context_dim, steps * (2 * latent_dim + 1))

    def prepare(self, context: torch.Tensor) -> list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
        """(u_hat, w, b) of each step for each sentence: (..., Z), (..., Z), (...)."""
        latent = self.latent_dim
        raw = self.parameters_from_context(context).unflatten(-1, (self.num_steps, 2 * latent + 1))
        prepared = []
        for t in range(self.num_steps):
            u, w, b = raw[..., t, :latent], raw[..., t, latent : 2 * latent], raw[..., t, -1]
            wu = (w * u).sum(-1, keepdim=True)
            # u_hat = u + (m(w.u) - w.u) w / |w|^2, m(x) = -1 + softplus(x): then w.u_hat = m(w.u) > -1
            u_hat = u + (F.softplus(wu) - 1.0 - wu) * w / w.pow(2).sum(-1, keepdim=True).clamp_min(1e-12)
            prepared.append((u_hat, w, b))
        return prepared

    def forward(self, z: torch.Tensor, prepared) -> tuple[torch.Tensor, torch.Tensor]:
        log_det = z.new_zeros(z.shape[:-1])
        for u_hat, w, b in prepared:
            activation = torch.tanh((w * z).sum(-1) + b)  # (...)
            psi = (1.0 - activation.pow(2)).unsqueeze(-1) * w
            log_det = log_det + torch.log((1.0 + (u_hat * psi).sum(-1)).abs() + 1e-12)
            z = z + u_hat * activation.unsqueeze(-1)
        return z, log_det


def build_flow(kind: str, *, latent_dim: int, context_dim: int, steps: int, hidden_dim: int) -> nn.Module | None:
    """The flow ``model.flow`` names, or None for ``none`` (and for 0 steps: the Gaussian itself)."""
    if kind not in FLOWS:
        raise ValueError(f"unknown flow '{kind}'; choices: {', '.join(FLOWS)}")
    if kind == "none" or steps == 0:
        return None
    if kind == "iaf":
        return InverseAutoregressiveFlow(latent_dim=latent_dim, context_dim=context_dim, steps=steps, hidden_dim=hidden_dim)
    return PlanarFlow(latent_dim=latent_dim, context_dim=context_dim, steps=steps)

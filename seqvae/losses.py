"""The objective's terms: reconstruction, KL, and the free-bits variants of the KL term.

Units: reconstruction and KL are nats per sentence (summed over a sentence's predicted tokens or
latent dimensions, averaged over sentences), as in ../METRICS.md; padding never counts.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from seqvae.config import FREE_BITS, PER_DIMENSION_FREE_BITS
from seqvae.data.batching import Batch
from seqvae.models.output_layer import sequence_nll
from seqvae.models.posterior import FlowPosterior
from seqvae.models.vae import VAEOutput


__all__ = ["FREE_BITS", "LossTerms", "Objective", "elbo_loss", "elbo_objective", "free_bits_per_dimension", "free_bits_per_example", "free_bits_total_hinge", "kl_penalty", "sequence_nll"]


def free_bits_per_dimension(kl_per_dimension: torch.Tensor, free_bits: float, batch_mean=None) -> torch.Tensor:
    """sum_i max(lambda, mean_batch KL_i): free bits of Kingma et al. 2016 (IAF paper, eq. 15),
    with the batch mean inside the max. kl_per_dimension is (B, Z); returns a scalar.

    A dimension whose batch-mean KL is under lambda contributes the constant lambda: no gradient.

    ``batch_mean``: when these rows are one rank's share of a global batch (seqvae.distributed),
    a function giving the global batch's mean of a (B, Z) tensor, (Z,), detached. Which
    dimensions are free is then decided on the global mean, and each rank's term is
    sum_i [mean_i if the global mean_i > lambda else lambda] over its own rows: weighted by the
    ranks' shares, the values and gradients add up to those of the whole batch.
    """
    mean = kl_per_dimension.mean(dim=0)
    if batch_mean is None:
        return torch.clamp(mean, min=free_bits).sum()
    counted = batch_mean(kl_per_dimension) > free_bits
    return torch.where(counted, mean, torch.full_like(mean, free_bits)).sum()


def free_bits_per_example(kl_per_dimension: torch.Tensor, free_bits: float) -> torch.Tensor:
    """mean_batch sum_i 1[KL_i > lambda] KL_i: the free bits of Li et al. 2019's code ("fb=2"),
    where each example's dimension whose KL is at most lambda is left out of the term (no value, no
    gradient) and the others count in full. kl_per_dimension is (B, Z); returns a scalar."""
    return (kl_per_dimension * (kl_per_dimension > free_bits)).sum(dim=1).mean()


def free_bits_total_hinge(kl: torch.Tensor, free_bits: float) -> torch.Tensor:
    """mean_batch max(KL(q(z|x) || p(z)) - lambda, 0): the total-KL hinge of the notes, section 4.3.
    kl is the per-sentence total KL, (B,); returns a scalar, zero (with zero gradient) below lambda."""
    return torch.clamp(kl - free_bits, min=0.0).mean()


def kl_penalty(
    kl: torch.Tensor,
    *,
    variant: str = "none",
    free_bits: float = 0.0,
    kl_per_dimension: torch.Tensor | None = None,
    batch_mean=None,
) -> torch.Tensor:
    """The KL term that beta multiplies, from the per-sentence KL ``kl`` (B,): its batch mean, or
    one of the free-bits variants (with ``mdr`` the plain mean: the rate constraint is a separate
    term, seqvae.rate_constraint). ``per_dimension`` and ``per_example`` need ``kl_per_dimension``
    (B, Z), which a flow posterior does not have. ``batch_mean``: see :func:`free_bits_per_dimension`
    (the other variants are means over sentences, which add up across ranks as they are)."""
    if variant in ("none", "mdr"):
        return kl.mean()
    if variant in PER_DIMENSION_FREE_BITS:
        if kl_per_dimension is None:
            raise ValueError(f"{variant} free bits need the KL of each dimension (B, Z)")
        if variant == "per_example":
            return free_bits_per_example(kl_per_dimension, free_bits)
        return free_bits_per_dimension(kl_per_dimension, free_bits, batch_mean)
    if variant == "total_hinge":
        return free_bits_total_hinge(kl, free_bits)
    raise ValueError(f"unknown free-bits variant '{variant}'; choices: {', '.join(FREE_BITS)}")


@dataclass
class LossTerms:
    """The terms of one batch. ``total`` is what is minimised; the others are detached floats
    (``loss`` is ``total``'s value).

    reconstruction and kl are means per sentence (nats); kl_penalty is the KL term after free
    bits. Reading them from the device is a sync, so the training step reads only these, all at
    once (:class:`Objective`).
    """

    total: torch.Tensor
    loss: float
    reconstruction: float
    kl: float
    kl_penalty: float
    kl_weight: float
    multiplier: float | None = None
    """The minimum-desired-rate multiplier |lambda| of this step, when the objective has one."""
    kl_std: float | None = None
    """With a flow posterior: the batch standard deviation of the Monte-Carlo KL estimate."""
    grad_norm: float | None = None
    """The gradient norm of the update, before clipping (set by the training step)."""


@dataclass
class Objective:
    """One batch's objective before its figures leave the device: ``total`` to minimise, and
    ``figures``, the detached (loss, reconstruction, kl, kl_penalty) in one float64 tensor of
    shape (4,). A training step reads them with one device sync after its backward pass (on a GPU
    each read waits for every kernel queued before it) and makes the :class:`LossTerms` then.
    ``kl_std`` (a flow posterior's, detached, float64, shape (1,)) stays on the device as well
    until that read; it is this rank's own, never reduced across ranks."""

    total: torch.Tensor
    figures: torch.Tensor
    kl_weight: float
    multiplier: float | None = None
    kl_std: torch.Tensor | None = None

    def readout(self) -> torch.Tensor:
        """The figures, then kl_std when there is one: what a step reads from the device."""
        return self.figures if self.kl_std is None else torch.cat([self.figures, self.kl_std])

    def terms(self, values: list[float] | None = None) -> LossTerms:
        """The LossTerms of ``values``, the four figures then kl_std when there is one (as
        :meth:`readout` lays them out; the figures may be reduced over the ranks of a
        data-parallel step), read from the device now when not given."""
        loss, reconstruction, kl, kl_penalty, *rest = self.readout().tolist() if values is None else values
        kl_std = rest[0] if rest else None
        return LossTerms(
            total=self.total, loss=loss, reconstruction=reconstruction, kl=kl, kl_penalty=kl_penalty,
            kl_weight=self.kl_weight, multiplier=self.multiplier, kl_std=kl_std,
        )


def elbo_objective(
    output: VAEOutput,
    batch: Batch,
    *,
    kl_weight: float | torch.Tensor,
    free_bits: str = "none",
    free_bits_lambda: float = 0.0,
    rate_constraint=None,
    batch_mean=None,
) -> Objective:
    """mean_batch[-log p(x|z)] + beta * KL term: the negative ELBO when beta = 1 and no free bits;
    with a ``rate_constraint`` (seqvae.rate_constraint.MinimumDesiredRate), plus
    |lambda| * (r - KL) on the batch-mean KL. ``batch_mean``: the global batch's mean when these
    rows are one rank's share (see :func:`free_bits_per_dimension`). ``kl_weight`` may be a 0-dim
    device tensor (a CUDA graph reads it at each replay, seqvae.cuda_graphs); the Objective then
    holds that tensor until the caller puts the step's number there."""
    nll = output.reconstruction  # (B,)
    kl = output.kl  # (B,): analytic, or the Monte-Carlo estimate with a flow posterior
    per_dimension = output.posterior.kl_per_dimension() if free_bits in PER_DIMENSION_FREE_BITS else None
    penalty = kl_penalty(
        kl, variant=free_bits, free_bits=free_bits_lambda, kl_per_dimension=per_dimension, batch_mean=batch_mean
    )
    total = nll.mean() + kl_weight * penalty
    multiplier = None
    if rate_constraint is not None:
        total = total + rate_constraint(kl.mean())
        multiplier = abs(rate_constraint.value)
    # each mean in its own dtype, then widened exactly to float64: the values float() would read
    figures = torch.stack([value.detach().double() for value in (total, nll.detach().mean(), kl.detach().mean(), penalty)])
    return Objective(
        total=total,
        figures=figures,
        kl_weight=kl_weight,
        multiplier=multiplier,
        kl_std=kl.detach().std().double().reshape(1) if isinstance(output.posterior, FlowPosterior) and kl.numel() > 1 else None,
    )


def elbo_loss(output: VAEOutput, batch: Batch, **options) -> LossTerms:
    """:func:`elbo_objective` with its figures read at once (the options are its keywords)."""
    return elbo_objective(output, batch, **options).terms()

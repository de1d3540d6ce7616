"""The approximate posterior q(z|x): a diagonal Gaussian with mean mu and log-variance log sigma^2,
optionally pushed through a normalizing flow (seqvae.models.flows).

Both posterior classes answer the same questions, so the objective and the measures never ask
which one they hold: a sample with the KL the objective uses (``sample_kl``), K samples with their
log q (``sample_with_log_prob``, the IW bound), log q(z_i | x_j) of every sentence j at given
codes (``cross_log_prob``, the aggregate posterior of the MI) and a sample with E log q(z|x) of
its own sentence (``sample_for_information``).

Shapes: B sentences, Z latent dimensions, K samples.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass

import torch
from torch import nn

from seqvae.models.flows import build_flow


@dataclass
class DiagonalGaussian:
    """N(mean, diag(exp(logvar))) for a batch: ``mean`` and ``logvar`` are (B, Z)."""

    mean: torch.Tensor
    logvar: torch.Tensor

    @property
    def std(self) -> torch.Tensor:
        return torch.exp(0.5 * self.logvar)

    def rsample(self, generator: torch.Generator | None = None, eps: torch.Tensor | None = None) -> torch.Tensor:
        """Reparametrised sample z = mu + sigma * eps, eps ~ N(0, I) (Kingma & Welling 2014);
        ``eps`` (B, Z) given when the noise was drawn beforehand (seqvae.distributed.StepNoise)."""
        if eps is None:
            device = generator.device if generator is not None else self.mean.device
            eps = torch.randn(self.mean.shape, generator=generator, device=device, dtype=self.mean.dtype)
        return self.mean + self.std * eps.to(self.mean.device)

    def kl_per_dimension(self) -> torch.Tensor:
        """KL(q(z|x) || N(0, I)) per dimension, (B, Z):
        1/2 (mu_j^2 + sigma_j^2 - log sigma_j^2 - 1)  (Kingma & Welling 2014, appendix B)."""
        return 0.5 * (self.mean.pow(2) + self.logvar.exp() - self.logvar - 1.0)

    def kl(self) -> torch.Tensor:
        """Total KL to the standard normal prior per sentence, (B,)."""
        return self.kl_per_dimension().sum(-1)

    def log_prob(self, z: torch.Tensor) -> torch.Tensor:
        """log q(z|x) summed over dimensions; z is (..., B, Z), the result (..., B)."""
        return (-0.5 * ((z - self.mean).pow(2) / self.logvar.exp() + self.logvar + math.log(2 * math.pi))).sum(-1)

    has_density = True
    """log q(z|x) is available at any z (needed by the whole-set MI)."""

    @property
    def base(self) -> DiagonalGaussian:
        """The Gaussian q0 a flow starts from: for this posterior, itself."""
        return self

    def negative_entropy(self) -> torch.Tensor:
        """E_q[log q(z|x)] = -Z/2 log(2 pi) - 1/2 sum_j (1 + log sigma_j^2), per sentence (B,)."""
        return -0.5 * self.mean.shape[-1] * math.log(2 * math.pi) - 0.5 * (1 + self.logvar).sum(-1)

    def sample_kl(
        self, generator: torch.Generator | None = None, eps: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """z ~ q(z|x) (B, Z) and the KL the objective uses (B,): here the analytic KL."""
        return self.rsample(generator, eps), self.kl()

    def noise(self, num_samples: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """K x B draws of z0 = mu + sigma * eps, (K, B, Z)."""
        device = generator.device if generator is not None else self.mean.device
        eps = torch.randn((num_samples, *self.mean.shape), generator=generator, device=device)
        return self.mean + self.std * eps.to(self.mean.device)

    def sample_with_log_prob(self, num_samples: int, generator: torch.Generator | None = None):
        """K codes per sentence, z (K, B, Z), and log q(z|x) of each, (K, B)."""
        z = self.noise(num_samples, generator)
        return z, self.log_prob(z)

    def cross_log_prob(self, z: torch.Tensor) -> torch.Tensor:
        """log q(z_i | x_j) for codes z (C, Z) under every sentence j of this posterior: (C, B)."""
        return self.log_prob(z.unsqueeze(1))

    def sample_for_information(self, generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """One z per sentence (B, Z) and E_q[log q(z|x)] of the sentence (B,), analytic here."""
        negative_entropy = self.negative_entropy()
        return self.rsample(generator), negative_entropy

    def select(self, rows: slice) -> DiagonalGaussian:
        return DiagonalGaussian(mean=self.mean[rows], logvar=self.logvar[rows])

    @staticmethod
    def concatenate(parts: list[DiagonalGaussian]) -> DiagonalGaussian:
        return DiagonalGaussian(mean=torch.cat([p.mean for p in parts]), logvar=torch.cat([p.logvar for p in parts]))


PAIRS_PER_CALL = 65_536
"""How many (code, sentence) pairs one flow inverse handles at once in ``cross_log_prob``: with
MADE width M its buffers hold about pairs x (3Z + M / Z) floats, some tens of MB."""


@dataclass
class FlowPosterior:
    """q(z_T|x): z_0 ~ q0(z|x) = ``base``, z_T = F(z_0; h(x)) with the flow and each sentence's
    ``context`` h(x) (B, H); log q(z_T|x) = log q0(z_0|x) - log |det dz_T/dz_0|.

    ``mean`` is F(mu_0; h(x)), the image of the base mean: the code that reconstruction,
    interpolation and attribute vectors use for a sentence (it is not E[z_T]); ``logvar`` and
    ``std`` are the base Gaussian's."""

    base: DiagonalGaussian
    context: torch.Tensor
    flow: nn.Module

    @property
    def has_density(self) -> bool:
        return bool(self.flow.has_inverse)

    @functools.cached_property
    def prepared(self):
        """What each flow step needs of the contexts, computed once per posterior (the MI asks for
        it once per chunk of codes)."""
        return self.flow.prepare(self.context)

    @functools.cached_property
    def mean(self) -> torch.Tensor:
        """F(mu_0; h(x)), computed once per posterior, in the grad mode of its first use."""
        return self.flow(self.base.mean, self.prepared)[0]

    @property
    def logvar(self) -> torch.Tensor:
        return self.base.logvar

    @property
    def std(self) -> torch.Tensor:
        return self.base.std

    def rsample(self, generator: torch.Generator | None = None) -> torch.Tensor:
        return self.flow(self.base.rsample(generator), self.prepared)[0]

    def sample_kl(
        self, generator: torch.Generator | None = None, eps: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """z_T (B, Z) and the single-sample Monte-Carlo KL on it, log q(z_T|x) - log N(z_T; 0, I), (B,)."""
        z0 = self.base.rsample(generator, eps)
        z, log_det = self.flow(z0, self.prepared)
        log_q = self.base.log_prob(z0) - log_det
        return z, log_q - _standard_normal_log_prob(z)

    def sample_with_log_prob(self, num_samples: int, generator: torch.Generator | None = None):
        """K codes per sentence pushed through the flow, (K, B, Z), with their own log q (K, B):
        no inverse is needed."""
        z0 = self.base.noise(num_samples, generator)
        prepared = [_expand(part, num_samples) for part in self.prepared]
        z, log_det = self.flow(z0, prepared)
        return z, self.base.log_prob(z0) - log_det

    def log_prob(self, z: torch.Tensor) -> torch.Tensor:
        """log q(z|x) at codes z (..., B, Z) of these sentences, through the exact inverse (IAF);
        a flow without one (planar) raises ValueError."""
        self._check_density()
        z0, log_det = self.flow.inverse(z, self.prepared)
        return self.base.log_prob(z0) - log_det

    @torch.no_grad()
    def cross_log_prob(self, z: torch.Tensor) -> torch.Tensor:
        """log q(z_i | x_j) for codes z (C, Z) under every sentence j, (C, B): z_i inverted under
        each sentence's flow, a bounded number of pairs at a time."""
        self._check_density()
        sentences = self.base.mean.shape[0]
        per_call = max(1, PAIRS_PER_CALL // sentences)
        prepared = self.prepared
        rows = []
        for start in range(0, z.shape[0], per_call):
            codes = z[start : start + per_call].unsqueeze(1)  # (c, 1, Z) against (B, ...) contexts
            z0, log_det = self.flow.inverse(codes, prepared)
            rows.append(self.base.log_prob(z0) - log_det)
        # A code far outside sentence j's flow inverts to a z_0 beyond the floating-point range
        # (a gate near 0 divides by it); its finite neighbours already have log q below -1e38, so
        # the density there is 0 to float precision and the pair counts as log q = -inf.
        log_q = torch.cat(rows)
        return torch.where(torch.isnan(log_q) | (log_q == float("inf")), float("-inf"), log_q)

    def _check_density(self) -> None:
        if not self.has_density:
            raise ValueError("this flow has no tractable inverse: log q(z|x) at arbitrary z is not available")

    def sample_for_information(self, generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """z_T per sentence and E_q[log q(z|x)] estimated as the base's analytic negative entropy
        minus the log-determinant at the sampled z_0 (exact for a flow of constant Jacobian)."""
        z0 = self.base.rsample(generator)
        z, log_det = self.flow(z0, self.prepared)
        return z, self.base.negative_entropy() - log_det

    def select(self, rows: slice) -> FlowPosterior:
        return FlowPosterior(base=self.base.select(rows), context=self.context[rows], flow=self.flow)

    @staticmethod
    def concatenate(parts: list[FlowPosterior]) -> FlowPosterior:
        base = DiagonalGaussian.concatenate([p.base for p in parts])
        return FlowPosterior(base=base, context=torch.cat([p.context for p in parts]), flow=parts[0].flow)


def _standard_normal_log_prob(z: torch.Tensor) -> torch.Tensor:
    return -0.5 * (z.pow(2) + math.log(2 * math.pi)).sum(-1)


def _expand(prepared, num_samples: int):
    """A step's per-sentence context share (B, ...), repeated for K samples: (K, B, ...)."""
    if isinstance(prepared, tuple):
        return tuple(_expand(part, num_samples) for part in prepared)
    return prepared.unsqueeze(0).expand(num_samples, *prepared.shape)


class GaussianPosterior(nn.Module):
    """A linear map from the encoder summary to (mu, log sigma^2), optionally followed by a flow
    (``flow``: ``iaf`` or ``planar``, seqvae.models.flows, reading the summary as its context);
    with ``batchnorm_gamma``, the
    means are batch-normalised (BN-VAE, Zhu et al. 2020, "A Batch Normalized Inference Network
    Keeps the KL Vanishing Away").

    BN-VAE: each mean dimension is normalised over the batch and scaled by a fixed gamma (a weight
    that is not trained) plus a learned shift beta_j (initialised at 0); log-variances are left as
    they are. In training mode a batch's means then have, per dimension, batch mean beta_j and
    batch variance gamma^2 (up to BatchNorm's epsilon), so with KL_j >= mu_j^2 / 2 the batch-mean
    KL is at least sum_j (gamma^2 + beta_j^2) / 2 >= Z gamma^2 / 2. At evaluation (and for a
    training batch of one sentence, which has no batch statistics) the running statistics
    (momentum 0.1) normalise instead."""

    def __init__(
        self,
        *,
        input_dim: int,
        latent_dim: int,
        batchnorm_gamma: float | None = None,
        flow: str = "none",
        flow_steps: int = 0,
        flow_hidden: int = 256,
    ) -> None:
        super().__init__()
        self.latent_dim = latent_dim
        self.projection = nn.Linear(input_dim, 2 * latent_dim)
        self.flow = build_flow(flow, latent_dim=latent_dim, context_dim=input_dim, steps=flow_steps, hidden_dim=flow_hidden)
        self.mean_norm = None
        if batchnorm_gamma is not None:
            self.mean_norm = nn.BatchNorm1d(latent_dim, momentum=0.1)
            self.mean_norm.weight.data.fill_(batchnorm_gamma)
            self.mean_norm.weight.requires_grad_(False)

    def forward(self, summary: torch.Tensor) -> DiagonalGaussian | FlowPosterior:
        """summary (B, H) -> q(z|x): the Gaussian with mean and logvar (B, Z), or with a flow the
        flow posterior on that Gaussian, whose context h(x) is the summary itself."""
        # fp32 moments under autocast (train.precision), so the KL and z are computed in fp32
        mean, logvar = self.projection(summary).float().chunk(2, dim=-1)
        if self.mean_norm is not None:
            mean = self._normalise(mean)
        base = DiagonalGaussian(mean=mean, logvar=logvar)
        return base if self.flow is None else FlowPosterior(base=base, context=summary, flow=self.flow)

    def _normalise(self, mean: torch.Tensor) -> torch.Tensor:
        norm = self.mean_norm
        use_batch = self.training and mean.shape[0] > 1
        if use_batch and isinstance(norm, nn.SyncBatchNorm):  # data-parallel on CUDA: statistics of the global batch
            return norm(mean)
        return nn.functional.batch_norm(
            mean, norm.running_mean, norm.running_var, norm.weight, norm.bias,
            training=use_batch, momentum=norm.momentum, eps=norm.eps,
        )


def empty_posterior(batch_size: int, *, device: torch.device | str = "cpu") -> DiagonalGaussian:
    """The posterior of a model without z (a language model, latent_dim = 0): B x 0 tensors, so
    that z has no dimension and every sum over dimensions (the KL) is exactly 0."""
    empty = torch.zeros(batch_size, 0, device=device)
    return DiagonalGaussian(mean=empty, logvar=empty)

"""The approximate posterior q(z|x): a diagonal Gaussian with mean mu and log-variance log sigma^2.

Shapes: B sentences, Z latent dimensions, K samples.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn


@dataclass
class DiagonalGaussian:
    """N(mean, diag(exp(logvar))) for a batch: ``mean`` and ``logvar`` are (B, Z)."""

    mean: torch.Tensor
    logvar: torch.Tensor

    @property
    def std(self) -> torch.Tensor:
        return torch.exp(0.5 * self.logvar)

    def rsample(self, generator: torch.Generator | None = None) -> torch.Tensor:
        """Reparametrised sample z = mu + sigma * eps, eps ~ N(0, I) (Kingma & Welling 2014)."""
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


class GaussianPosterior(nn.Module):
    """A linear map from the encoder summary to (mu, log sigma^2); with ``batchnorm_gamma``, the
    means are batch-normalised (BN-VAE, Zhu et al. 2020, "A Batch Normalized Inference Network
    Keeps the KL Vanishing Away").

    BN-VAE: each mean dimension is normalised over the batch and scaled by a fixed gamma (a weight
    that is not trained) plus a learned shift beta_j (initialised at 0); log-variances are left as
    they are. In training mode a batch's means then have, per dimension, batch mean beta_j and
    batch variance gamma^2 (up to BatchNorm's epsilon), so with KL_j >= mu_j^2 / 2 the batch-mean
    KL is at least sum_j (gamma^2 + beta_j^2) / 2 >= Z gamma^2 / 2. At evaluation (and for a
    training batch of one sentence, which has no batch statistics) the running statistics
    (momentum 0.1) normalise instead."""

    def __init__(self, *, input_dim: int, latent_dim: int, batchnorm_gamma: float | None = None) -> None:
        super().__init__()
        self.latent_dim = latent_dim
        self.projection = nn.Linear(input_dim, 2 * latent_dim)
        self.mean_norm = None
        if batchnorm_gamma is not None:
            self.mean_norm = nn.BatchNorm1d(latent_dim, momentum=0.1)
            self.mean_norm.weight.data.fill_(batchnorm_gamma)
            self.mean_norm.weight.requires_grad_(False)

    def forward(self, summary: torch.Tensor) -> DiagonalGaussian:
        """summary (B, H) -> q(z|x) with mean and logvar (B, Z)."""
        mean, logvar = self.projection(summary).chunk(2, dim=-1)
        if self.mean_norm is not None:
            mean = self._normalise(mean)
        return DiagonalGaussian(mean=mean, logvar=logvar)

    def _normalise(self, mean: torch.Tensor) -> torch.Tensor:
        norm = self.mean_norm
        use_batch = self.training and mean.shape[0] > 1
        return nn.functional.batch_norm(
            mean, norm.running_mean, norm.running_var, norm.weight, norm.bias,
            training=use_batch, momentum=norm.momentum, eps=norm.eps,
        )


def empty_posterior(batch_size: int, *, device: torch.device | str = "cpu") -> DiagonalGaussian:
    """The posterior of a model without z (a language model, latent_dim = 0): B x 0 tensors, so
    that z has no dimension and every sum over dimensions (the KL) is exactly 0."""
    empty = torch.zeros(batch_size, 0, device=device)
    return DiagonalGaussian(mean=empty, logvar=empty)

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
    """A linear map from the encoder summary to (mu, log sigma^2)."""

    def __init__(self, *, input_dim: int, latent_dim: int) -> None:
        super().__init__()
        self.latent_dim = latent_dim
        self.projection = nn.Linear(input_dim, 2 * latent_dim)

    def forward(self, summary: torch.Tensor) -> DiagonalGaussian:
        """summary (B, H) -> q(z|x) with mean and logvar (B, Z)."""
        mean, logvar = self.projection(summary).chunk(2, dim=-1)
        return DiagonalGaussian(mean=mean, logvar=logvar)

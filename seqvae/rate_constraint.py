"""Minimum desired rate (Pelsmaeker & Aziz 2020, "Effective Estimation of Deep Generative Language
Models", section 4): the constraint E[KL(q(z|x) || p(z))] >= r, enforced by a Lagrange multiplier.

The model minimises rec + beta * KL + |lambda| * (r - KL) while lambda is learned by gradient
*ascent* on the same expression (the authors' code: RMSprop on the negated gradient). Below the
target rate the ascent raises |lambda|, which puts a net push on the KL up; above it |lambda|
falls towards 0 and the objective returns to the ELBO.
"""

from __future__ import annotations

import torch
from torch import nn


class MinimumDesiredRate(nn.Module):
    """The multiplier lambda, its optimiser, and the constraint term |lambda| * (r - KL)."""

    def __init__(self, *, rate: float, learning_rate: float = 1e-3, initial: float = 1.0) -> None:
        super().__init__()
        self.rate = rate
        self.multiplier = nn.Parameter(torch.tensor(float(initial)))
        self.optimizer = torch.optim.RMSprop([self.multiplier], lr=learning_rate)

    def forward(self, kl: torch.Tensor) -> torch.Tensor:
        """|lambda| * (r - KL), KL the batch-mean total KL (a scalar)."""
        return self.multiplier.abs() * (self.rate - kl)

    def ascend(self) -> None:
        """One gradient-ascent step of lambda on the term whose gradient backward() left; the
        gradient is then cleared."""
        if self.multiplier.grad is not None:
            self.multiplier.grad.neg_()
            self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)

    @property
    def value(self) -> float:
        return float(self.multiplier.detach())

    def checkpoint(self) -> dict:
        return {"multiplier": self.multiplier.detach().clone(), "optimizer": self.optimizer.state_dict()}

    def restore(self, state: dict) -> None:
        with torch.no_grad():
            self.multiplier.copy_(state["multiplier"])
        self.optimizer.load_state_dict(state["optimizer"])

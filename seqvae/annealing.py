"""KL-weight schedules: beta as a pure function of the global step.

``step`` counts optimizer steps already taken (the first update uses step 0). Being pure
functions of the step, the schedules continue exactly when a run resumes from a checkpoint.
"""

from __future__ import annotations

import math


def constant(step: int, *, beta: float = 1.0) -> float:
    """beta at every step: the beta-VAE objective (Higgins et al. 2017); beta = 1 is the ELBO and
    beta = 0 the plain autoencoder / UAE objective (Grover & Ermon 2019)."""
    return beta


def linear(step: int, *, warmup_steps: int, beta: float = 1.0, start: float = 0.0) -> float:
    """start + (beta - start) * min(step / warmup_steps, 1): monotonic warm-up (Bowman et al. 2016)."""
    if warmup_steps <= 0:
        return beta
    return start + (beta - start) * min(step / warmup_steps, 1.0)


def logistic(step: int, *, rate: float, midpoint: int, beta: float = 1.0) -> float:
    """beta / (1 + exp(-rate * (step - midpoint))): the sigmoid schedule of Bowman et al. 2016."""
    exponent = -rate * (step - midpoint)
    if exponent > 700:  # exp would overflow; the weight is 0 to double precision
        return 0.0
    return beta / (1.0 + math.exp(exponent))


def cyclical(step: int, *, cycle_steps: int, ratio: float = 0.5, beta: float = 1.0) -> float:
    """Cyclical annealing (Fu et al. 2019): tau = (step mod C) / C, beta * min(tau / R, 1).

    Each cycle of C steps rises linearly from 0 to beta over its first R * C steps, then stays.
    """
    tau = (step % cycle_steps) / cycle_steps
    return beta * min(tau / ratio, 1.0)


def kl_weight(step: int, config) -> float:
    """The weight an :class:`~seqvae.config.AnnealingConfig` gives at ``step``."""
    if config.schedule == "constant":
        return constant(step, beta=config.beta)
    if config.schedule == "linear":
        return linear(step, warmup_steps=config.warmup_steps, beta=config.beta, start=config.start)
    if config.schedule == "logistic":
        return logistic(step, rate=config.logistic_rate, midpoint=config.logistic_midpoint, beta=config.beta)
    if config.schedule == "cyclical":
        return cyclical(step, cycle_steps=config.cycle_steps, ratio=config.cycle_ratio, beta=config.beta)
    raise ValueError(f"unknown KL schedule '{config.schedule}'; choices: constant, linear, logistic, cyclical")

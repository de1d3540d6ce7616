"""Optimisation: the optimizer, and the learning-rate rules: ``train.lr_decay = "plateau"`` (He et
al. 2019 and Li et al. 2019 decay the rate when validation stalls, go back to the best weights,
and stop after a number of decays) and ``"wsd"`` (a rate that is a function of the step alone, for
a run whose length is planned, applied by seqvae.training.parts.step_schedule)."""

from __future__ import annotations

from collections.abc import Callable

import torch

from seqvae.config import Config, TrainConfig


def build_optimizer(parameters, *, learning_rate: float, device: torch.device, kind: str = "adam") -> torch.optim.Optimizer:
    """Adam (Kingma & Ba 2015) with the fused kernel where PyTorch has one for the device (CPU and
    CUDA): the same update as the default, computed in one pass over the parameters instead of
    several (3.5 times faster on a CPU at PTB sizes, about a tenth of a whole training step); or
    plain SGD (``kind="sgd"``)."""
    if kind == "sgd":
        return torch.optim.SGD(parameters, lr=learning_rate)
    return torch.optim.Adam(parameters, lr=learning_rate, fused=True if device.type in ("cpu", "cuda") else None)


def wsd_learning_rate(step: int, config: TrainConfig) -> float:
    """The rate of step ``step`` (0 for the first) under warm-up, stable, decay (Hu et al. 2024,
    "MiniCPM", section 4): with peak eta = learning_rate, floor eta_min = min_learning_rate, W =
    lr_warmup_steps, D = lr_decay_steps and T = max_steps,

        eta(s) = eta (s + 1) / W                                  for s < W
        eta(s) = eta                                              for W <= s < T - D
        eta(s) = eta_min + (eta - eta_min) (T - s - 1) / D        for T - D <= s < T,

    so the first step already moves, the last decay step runs at eta_min, and no state is kept
    (a resumed run recomputes it from the step)."""
    peak, floor = config.learning_rate, min(config.min_learning_rate, config.learning_rate)
    warmup, decay, total = config.lr_warmup_steps, config.lr_decay_steps, config.max_steps
    if step < warmup:
        return peak * (step + 1) / warmup
    if decay and step >= total - decay:
        remaining = max(total - step - 1, 0)
        return floor + (peak - floor) * remaining / decay
    return peak


def build_optimization(config: Config, model, device: torch.device):
    """The optimizer, and the plateau scheduler when ``train.lr_decay = "plateau"``."""
    optimizer = build_optimizer(
        model.parameters(), learning_rate=config.train.learning_rate, device=device, kind=config.train.optimizer
    )
    if config.train.lr_decay != "plateau":
        return optimizer, None
    scheduler = torch.optim.lr_scheduler.ReduceLROnPlateau(
        optimizer,
        mode="min",
        factor=config.train.lr_decay_factor,
        patience=config.train.lr_patience,
        min_lr=config.train.min_learning_rate,
    )
    return optimizer, scheduler


class PlateauRule:
    """The learning-rate rule at an epoch's end: count a stall from epoch lr_decay_start on, decay
    the rate after lr_patience stalls, go back to best.pt if lr_decay_reload_best, and stop once
    stop_after_decays decays are reached. Without ``train.lr_decay = "plateau"`` it only counts."""

    def __init__(self, config: TrainConfig, optimizer: torch.optim.Optimizer, scheduler) -> None:
        self.config, self.optimizer, self.scheduler = config, optimizer, scheduler
        self.decays = 0  # learning-rate decays so far (checkpointed as lr_decays)

    def done(self) -> bool:
        """train.stop_after_decays is reached."""
        limit = self.config.stop_after_decays
        return bool(limit) and self.decays >= limit

    def after_epoch(self, epochs: int, value: float, reload_best: Callable[[float], int | None]) -> str | None:
        """Take the validation ``value`` after ``epochs`` finished epochs; returns the note of a
        decay, or None. ``reload_best(rate)`` puts best.pt's weights and optimizer state back at
        the new rate and says from which epoch (None when there is no best.pt)."""
        if self.scheduler is None or epochs <= self.config.lr_decay_start:
            return None
        before = self.optimizer.param_groups[0]["lr"]
        self.scheduler.step(value)
        rate = self.optimizer.param_groups[0]["lr"]
        if rate >= before:
            return None
        self.decays += 1
        note = f"epoch {epochs}: learning rate {before:.3g} -> {rate:.3g} (decay {self.decays})"
        if self.config.lr_decay_reload_best:
            reloaded = reload_best(rate)
            if reloaded is not None:
                note += f"; weights and optimizer state back to best.pt (epoch {reloaded})"
        return note

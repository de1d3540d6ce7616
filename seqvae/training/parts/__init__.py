"""Training methods that change the loop, each a :class:`Part` in a file of its own.

The loop (seqvae.training.loop) calls every chosen part at fixed points; a part overrides the
hooks it needs and inherits the others, which do nothing. :func:`choose_parts` is the one place
where a config picks them. docs/training-methods.md walks through adding one.
"""

from __future__ import annotations

from typing import Any

from seqvae.config import Config
from seqvae.distributed import World


class Part:
    """A method that changes training, as hooks called by the trainer. ``trainer`` is the
    :class:`seqvae.training.trainer.Trainer` (model, optimizer, state, config, ...)."""

    def __init__(self, trainer) -> None:
        """Built once the trainer's model and optimizer exist."""

    def fresh_start(self, trainer) -> None:
        """A new run (not a resumed one), on rank 0, before the run directory is (re)created: a
        one-line error here leaves an existing directory as it was."""

    def start(self, trainer) -> None:
        """Every rank, after the fresh start or the restore, before the first step."""

    def kl_weight(self, trainer, beta: float) -> float:
        """The KL weight of the coming step, given the schedule's (``annealing``) or an earlier
        part's; a part that steers the weight returns its own."""
        return beta

    def step_options(self, *, outer: bool) -> dict[str, Any]:
        """Keyword arguments this part adds to :func:`seqvae.training.step.train_step`; ``outer``:
        the loop's own update of the step (not one of a part's extra updates)."""
        return {}

    def before_update(self, trainer, indices: list[int], batches: list[list[int]], beta: float) -> dict[str, float]:
        """Before the loop's update of a step, whose sentences are ``indices`` among the epoch's
        ``batches``; returns figures for the metric window (summed, then averaged per step)."""
        return {}

    def outer_scope(self):
        """``(updated, frozen)`` parameter lists for the loop's update, or None for all of them."""
        return None

    def take(self, trainer, indices: list[int]):
        """The ``(batch, share)`` this process trains on for these sentences, or None to leave it
        to the trainer (the whole batch, no share)."""
        return None

    def after_update(self, trainer, share) -> None:
        """After every update (the loop's and the parts' own)."""

    def after_validation(self, trainer, valid: dict[str, Any], record: dict[str, Any], *, epoch_end: bool) -> None:
        """After a validation's figures are in, before its ``record`` is logged (entries added to
        ``record`` come before the figures)."""

    def save(self, payload: dict[str, Any]) -> None:
        """Add this part's state to a checkpoint's entries."""

    def restore(self, payload: dict[str, Any]) -> None:
        """Take this part's state back from a checkpoint's payload."""


def choose_parts(config: Config, world: World, trainer) -> list[Part]:
    """The parts a config asks for, built for ``trainer`` (its model and optimizer exist)."""
    from seqvae.training.parts.aggressive import AggressiveTraining
    from seqvae.training.parts.cuda_graphs import CudaGraphs
    from seqvae.training.parts.data_parallel import DataParallel
    from seqvae.training.parts.rate_constraint import RateConstraint
    from seqvae.training.parts.step_schedule import StepSchedule
    from seqvae.training.parts.warm_start import WarmStart

    chosen = [
        (config.train.cuda_graphs, CudaGraphs),
        (config.train.lr_decay == "wsd", StepSchedule),
        (config.objective.free_bits == "mdr", RateConstraint),
        (config.train.aggressive, AggressiveTraining),
        (bool(config.train.init_from), WarmStart),
        (world.launched, DataParallel),
    ]
    return [part(trainer) for wanted, part in chosen if wanted]

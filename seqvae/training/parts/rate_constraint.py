"""``objective.free_bits = "mdr"``: the minimum desired rate (Pelsmaeker & Aziz 2020,
seqvae.rate_constraint). The loop's update adds the constraint term and then takes the
multiplier's ascent step; the multiplier and its optimizer go into the checkpoint."""

from __future__ import annotations

from typing import Any

from seqvae.rate_constraint import MinimumDesiredRate
from seqvae.training.parts import Part


class RateConstraint(Part):
    def __init__(self, trainer) -> None:
        objective = trainer.config.objective
        self.constraint = MinimumDesiredRate(
            rate=objective.free_bits_lambda,
            learning_rate=objective.mdr_learning_rate,
            initial=objective.mdr_initial_multiplier,
        ).to(trainer.device)

    def step_options(self, *, outer: bool) -> dict[str, Any]:
        return {"rate_constraint": self.constraint} if outer else {}

    def save(self, payload: dict[str, Any]) -> None:
        payload["rate_constraint"] = self.constraint.checkpoint()

    def restore(self, payload: dict[str, Any]) -> None:
        self.constraint.restore(payload["rate_constraint"])

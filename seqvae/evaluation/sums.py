"""What every evaluation shares: the free-bits target, perplexity, and per-batch figures put
back in batch order when ranks share the batches."""

from __future__ import annotations

import math

from seqvae.config import PER_DIMENSION_FREE_BITS


def free_bits_target(objective, latent_dim: int) -> float:
    """The total KL a free-bits objective aims at (0 without free bits): lambda per dimension times
    the dimensions, or lambda itself for the total-KL hinge."""
    if objective.free_bits in PER_DIMENSION_FREE_BITS:
        return objective.free_bits_lambda * latent_dim
    if objective.free_bits == "total_hinge":
        return objective.free_bits_lambda
    return 0.0


def perplexity(total_nll: float, num_tokens: int) -> float:
    """exp(total NLL over the set / total predicted tokens)."""
    return math.exp(total_nll / num_tokens)


def in_batch_order(records: list[tuple], world) -> list[tuple]:
    """Every rank's per-batch records (each beginning with its batch index), in batch order, on
    every rank; this rank's own when there is no ``world``."""
    if world is None:
        return records
    return sorted((record for part in world.gather(records) for record in part), key=lambda record: record[0])

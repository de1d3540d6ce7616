"""``train.cuda_graphs``: the step's forward, objective and backward replayed from CUDA graphs
(seqvae.cuda_graphs), one per batch shape."""

from __future__ import annotations

from typing import Any

from seqvae.training.parts import Part
from seqvae.training.step import graphed_step


class CudaGraphs(Part):
    def __init__(self, trainer) -> None:
        config = trainer.config
        self.graphs = graphed_step(
            trainer.model, trainer.optimizer, objective=config.objective, precision=trainer.precision,
            width_multiple=config.train.cuda_graph_width,
        )

    def step_options(self, *, outer: bool) -> dict[str, Any]:
        return {"graphs": self.graphs}

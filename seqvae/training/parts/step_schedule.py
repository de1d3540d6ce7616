"""``train.lr_decay = "wsd"``: the learning rate set before every update from the step alone
(seqvae.training.optimization.wsd_learning_rate), for runs whose length is planned in steps, such
as those of recipes/text/run.py, which lays the schedule out in a time budget."""

from __future__ import annotations

from seqvae.training.optimization import wsd_learning_rate
from seqvae.training.parts import Part


class StepSchedule(Part):
    """Warm-up, stable, decay: nothing to checkpoint, since the rate follows from the step."""

    def __init__(self, trainer) -> None:
        self.config = trainer.config.train

    def _set(self, trainer) -> None:
        rate = wsd_learning_rate(trainer.state.step, self.config)
        for group in trainer.optimizer.param_groups:
            group["lr"] = rate

    def start(self, trainer) -> None:
        self._set(trainer)

    def before_update(self, trainer, indices, batches, beta):
        self._set(trainer)
        return {}

"""``train.aggressive``: aggressive inference-network training (He et al. 2019, Algorithm 1).
While the switch is on, every step first updates the encoder and posterior alone in an inner loop,
then the decoder alone; after each epoch the validation MI decides whether the switch stays on.
The rules themselves are seqvae.aggressive's."""

from __future__ import annotations

from typing import Any

import torch

from seqvae.aggressive import AggressiveSwitch, InnerLoopRule
from seqvae.training.parts import Part
from seqvae.training.step import frozen


class AggressiveTraining(Part):
    def __init__(self, trainer) -> None:
        model = trainer.model
        self.switch = AggressiveSwitch(on=True)
        encoder_parts = [part for part in (model.encoder, model.posterior) if part is not None]
        self.encoder_parameters = [p for part in encoder_parts for p in part.parameters() if p.requires_grad]
        self.decoder_parameters = [p for p in model.decoder.parameters() if p.requires_grad]

    def before_update(self, trainer, indices, batches, beta) -> dict[str, float]:
        return {"inner_steps": self.inner_loop(trainer, indices, batches, beta) if self.switch.on else 0}

    def outer_scope(self):
        """In the aggressive phase the loop's update changes the decoder alone."""
        return (self.decoder_parameters, self.encoder_parameters) if self.switch.on else None

    def inner_loop(self, trainer, indices: list[int], batches: list[list[int]], beta: float) -> int:
        """He et al. 2019's inner loop before one decoder update: encoder-and-posterior-only steps,
        first on the outer step's batch, then on random batches of the epoch, until
        :class:`~seqvae.aggressive.InnerLoopRule` stops it. The random batches come from a
        generator seeded by (seed, step), so a resumed run draws the same ones. Returns the number
        of inner steps taken. (The inner loop runs inside one outer step, between checkpoints.)"""
        config = trainer.config
        rule = InnerLoopRule(check_every=config.train.aggressive_check_every, max_steps=config.train.aggressive_max_inner_steps)
        generator = torch.Generator().manual_seed(config.run.seed * 1_000_003 + trainer.state.step)
        with frozen(self.decoder_parameters):
            while True:
                batch, share = trainer.take(indices)
                terms = trainer.update(batch, beta, share, only=self.encoder_parameters)
                # the global batch's loss (under torchrun every rank takes the same decision)
                sentences, tokens = (share.sentences, share.tokens) if share is not None else (batch.num_sentences, batch.num_tokens)
                if rule.add(terms.loss * sentences, tokens):
                    return rule.steps
                index = int(torch.randint(len(batches), (1,), generator=generator))
                indices = batches[index]

    def after_validation(self, trainer, valid, record, *, epoch_end: bool) -> None:
        if epoch_end and self.switch.on and not self.switch.after_epoch(valid["mi"]):
            trainer.say(
                f"aggressive training off for good after epoch {trainer.state.epoch + 1}: validation MI "
                f"{valid['mi']:.3f} did not rise"
            )
        record["aggressive"] = self.switch.on

    def save(self, payload: dict[str, Any]) -> None:
        payload["aggressive"] = self.switch.state_dict()

    def restore(self, payload: dict[str, Any]) -> None:
        if payload.get("aggressive"):
            self.switch.load_state_dict(payload["aggressive"])

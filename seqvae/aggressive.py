"""The two rules of aggressive inference-network training (He et al. 2019, "Lagging Inference
Networks and Posterior Collapse in Variational Autoencoders", Algorithm 1 and their code):

- the inner loop: before each decoder update, the encoder and posterior alone are updated on
  training batches (the outer step's batch first, then random ones) until their loss stops
  improving: every ``check_every`` inner steps the mean loss per predicted token of the last
  window is compared with the window before, and the loop stops when it did not fall; it stops
  after ``max_steps`` inner steps in any case;
- the switch: after each epoch the validation mutual information I(x; z) is compared with the
  previous epoch's, and aggressive mode ends for good at the first epoch where it does not rise.

The training part seqvae.training.parts.aggressive runs the updates; these classes only decide,
so that each rule is tested on scripted losses and MI sequences.
"""

from __future__ import annotations

from dataclasses import dataclass


class InnerLoopRule:
    """When the encoder-only inner loop of one outer step stops; one instance per outer step."""

    def __init__(self, *, check_every: int = 15, max_steps: int = 100) -> None:
        self.check_every, self.max_steps = check_every, max_steps
        self.steps = 0
        self.previous: float | None = None  # mean loss per token of the window before
        self.loss_sum = 0.0
        self.tokens = 0

    def add(self, loss_sum: float, tokens: int) -> bool:
        """Record one inner step (its loss summed over sentences, and its predicted tokens);
        True when the loop must stop after it."""
        self.steps += 1
        self.loss_sum += loss_sum
        self.tokens += tokens
        if self.steps >= self.max_steps:
            return True
        if self.steps % self.check_every:
            return False
        current = self.loss_sum / self.tokens
        stop = self.previous is not None and current >= self.previous
        self.previous, self.loss_sum, self.tokens = current, 0.0, 0
        return stop


@dataclass
class AggressiveSwitch:
    """Whether aggressive mode is still on, and the MI it compares the next epoch's with. Its
    fields go into the checkpoint, so a resumed run continues in the same phase."""

    on: bool = True
    previous_mi: float | None = None

    def after_epoch(self, mi: float) -> bool:
        """Record an epoch's validation MI; returns whether aggressive mode stays on. It ends for
        good at the first epoch whose MI is not above the previous epoch's."""
        if self.on:
            if self.previous_mi is not None and mi <= self.previous_mi:
                self.on = False
            self.previous_mi = mi
        return self.on

    def state_dict(self) -> dict:
        return {"on": self.on, "previous_mi": self.previous_mi}

    def load_state_dict(self, state: dict) -> None:
        self.on, self.previous_mi = bool(state["on"]), state["previous_mi"]

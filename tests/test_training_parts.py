"""The extension point of the training loop: a new method is a Part, chosen in one place.

A part defined here (a KL-weight controller that halves the schedule's weight once validation
has been seen, and counts what it is shown) is added where parts are chosen; the loop must call
each hook where docs/training-methods.md says, log the weight the part chose, and carry the part's
state through a checkpoint into a resumed run.
"""

from __future__ import annotations

import pytest
import torch

import seqvae.training.trainer as trainer_module
from seqvae.training import train
from seqvae.training.parts import Part

from conftest import metrics, tiny_config


class HalvingController(Part):
    """Halves the KL weight after the first validation; keeps its counts in the checkpoint."""

    def __init__(self, trainer) -> None:
        self.calls: list[str] = []
        self.validations = 0
        self.updates = 0

    def fresh_start(self, trainer) -> None:
        self.calls.append("fresh_start")

    def start(self, trainer) -> None:
        self.calls.append("start")

    def kl_weight(self, trainer, beta: float) -> float:
        return beta / 2 if self.validations else beta

    def before_update(self, trainer, indices, batches, beta) -> dict[str, float]:
        assert indices == batches[trainer.state.batch_in_epoch]
        return {"controller_halved": float(self.validations > 0)}

    def after_update(self, trainer, share) -> None:
        self.updates += 1

    def after_validation(self, trainer, valid, record, *, epoch_end: bool) -> None:
        self.validations += 1
        record["controller"] = self.validations

    def save(self, payload) -> None:
        payload["controller"] = {"validations": self.validations, "updates": self.updates}

    def restore(self, payload) -> None:
        self.validations, self.updates = payload["controller"]["validations"], payload["controller"]["updates"]


@pytest.fixture
def with_controller(monkeypatch):
    made: list[HalvingController] = []
    choose = trainer_module.choose_parts

    def chosen(config, world, trainer):
        made.append(HalvingController(trainer))
        return [*choose(config, world, trainer), made[-1]]  # the one line a new method adds

    monkeypatch.setattr(trainer_module, "choose_parts", chosen)
    return made


def test_a_new_part_steers_the_loop_through_its_hooks_and_resumes(tiny_corpus, tmp_path, with_controller):
    settings = {"annealing": {"schedule": "constant", "beta": 0.8}, "train": {"epochs": 2, "log_every": 19}}
    config = tiny_config(tiny_corpus, tmp_path / "run", **settings)
    train(config, progress=False)
    part = with_controller[-1]
    assert part.calls == ["fresh_start", "start"]
    assert part.updates == 2 * 19 and part.validations == 2  # 300 sentences in batches of 16: 19 steps an epoch
    records = metrics(tmp_path / "run")
    logged = [(r["epoch"], r["beta"], r["controller_halved"]) for r in records if r["split"] == "train"]
    assert logged == [(1, 0.8, 0.0), (2, 0.4, 1.0)]  # the weight the part chose is the one trained with
    assert [r["controller"] for r in records if r["split"] == "valid"] == [1, 2]
    last = torch.load(tmp_path / "run" / "checkpoints" / "last.pt", weights_only=True)
    assert last["controller"] == {"validations": 2, "updates": 38}

    resumed = train(tiny_config(tiny_corpus, tmp_path / "run", **{**settings, "train": {"epochs": 3, "log_every": 19}}),
                    resume=True, progress=False)
    part = with_controller[-1]
    assert part.calls == ["start"]  # a resumed run has no fresh start
    assert resumed.epoch == 3 and part.updates == 3 * 19 and part.validations == 3
    assert [r["beta"] for r in metrics(tmp_path / "run") if r["split"] == "train"][-1] == 0.4

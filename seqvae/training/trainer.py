"""The state of one training run and the operations the loop (seqvae.training.loop) is written in:
each a few lines over the module that holds its responsibility."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from seqvae.annealing import kl_weight
from seqvae.checkpoints import load_model_state
from seqvae.config import Config
from seqvae.data.batching import bucketed_batches, collate
from seqvae.data.preparation import PreparedData
from seqvae.distributed import SINGLE, World
from seqvae.errors import ReportedByRankZero, SeqVAEError, TrainingInterrupted
from seqvae.losses import LossTerms
from seqvae.models.vae import build_model
from seqvae.run_directory import BEST, CHECKPOINT_DIR, CONFIG_FILE, LAST
from seqvae.training import checkpointing, validation
from seqvae.training.metrics import MetricWindow, NoMetrics, round_figure, summary
from seqvae.training.optimization import PlateauRule, build_optimization
from seqvae.training.parts import choose_parts
from seqvae.training.step import NonFiniteStep, Precision, frozen, train_step
from seqvae.training.stopping import Stops, ValidationInterrupted


@dataclass
class TrainingState:
    """Where a training stands; checkpoints record the next batch to run."""

    step: int = 0
    epoch: int = 0  # epochs finished
    batch_in_epoch: int = 0
    best: float = float("inf")  # the lowest selection value so far (best.pt's)
    seconds_before: float = 0.0  # training time of earlier sittings (train.max_minutes counts them)
    started: float = field(default_factory=time.perf_counter)
    window: MetricWindow = field(default_factory=MetricWindow)
    valid: dict[str, Any] | None = None
    valid_step: int | None = None  # the step ``valid`` was measured at
    saved_step: int | None = None  # the step of the last checkpoint written to last.pt

    def seconds(self) -> float:
        """Training time so far, earlier sittings included."""
        return self.seconds_before + time.perf_counter() - self.started


class Trainer:
    """The model, its optimisation, the chosen parts and the state of one training run."""

    def __init__(
        self, config: Config, data: PreparedData, device: torch.device, say: Callable[[str], None], *,
        progress: bool = False, world: World = SINGLE,
    ) -> None:
        self.config, self.data, self.device, self.say, self.progress, self.world = config, data, device, say, progress, world
        self.tokenizer = data.tokenizer
        self.run_dir = Path(config.run.dir)
        self.last_path, self.best_path = self.run_dir / CHECKPOINT_DIR / LAST, self.run_dir / CHECKPOINT_DIR / BEST
        seed = config.run.seed
        torch.manual_seed(seed)
        self.model = build_model(
            config.model, vocab_size=self.tokenizer.vocab_size, pad_id=self.tokenizer.pad_id, unk_id=self.tokenizer.unk_id
        ).to(device)
        # Under torchrun: the noise of every step from a generator all ranks hold in the same state
        # (seqvae.distributed), and each rank's own default generator (dropout) seeded apart.
        self.noise_generator = torch.Generator().manual_seed(checkpointing.noise_seed(seed, 0)) if world.launched else None
        if world.rank:
            torch.manual_seed(checkpointing.rank_seed(seed, world.rank, 0))
        self.precision = Precision(config.train.precision, device)
        self.optimizer, self.scheduler = build_optimization(config, self.model, device)
        self.plateau = PlateauRule(config.train, self.optimizer, self.scheduler)
        self.stops = Stops(config.train, launched=world.launched)
        self.state = TrainingState()
        self.metrics = NoMetrics()
        self.watch = None  # rank 0's TensorBoardLog when run.tensorboard (seqvae.training.watching)
        self.overload_noted = False  # an autoencoder's expected overload, said once a sitting (validation.py)
        self.parts = choose_parts(config, world, self)

    # the steps
    def epoch_batches(self) -> list[list[int]]:
        """The current epoch's batches of training sentences, a pure function of (seed, epoch)."""
        train = self.config.train
        lengths = self.data.splits["train"].lengths
        return bucketed_batches(
            lengths, batch_size=train.batch_size, seed=self.config.run.seed, epoch=self.state.epoch,
            pool_batches=train.bucket_batches,
        )

    def kl_weight(self) -> float:
        """The KL weight of the coming step: the annealing schedule's, as the parts leave it."""
        beta = kl_weight(self.state.step, self.config.annealing)
        for part in self.parts:
            beta = part.kl_weight(self, beta)
        return beta

    def take(self, indices: list[int]):
        """The batch of these training sentences this process trains on, and its rank's share."""
        for part in self.parts:
            taken = part.take(self, indices)
            if taken is not None:
                return taken
        sequences = self.data.splits["train"].sequences
        return collate([sequences[i] for i in indices]).to(self.device), None

    def outer_step(self, indices: list[int], batches: list[list[int]], beta: float) -> tuple[LossTerms, dict[str, float]]:
        """One step of the loop: what the parts do first, then the update (of the parameters a
        part may restrict it to); returns its figures and the parts' figures."""
        started = time.perf_counter()
        extra: dict[str, float] = {}
        for part in self.parts:
            extra.update(part.before_update(self, indices, batches, beta))
        batch, share = self.take(indices)
        scope = next((scope for part in self.parts if (scope := part.outer_scope()) is not None), None)
        if scope is None:
            terms = self.update(batch, beta, share, outer=True)
        else:
            updated, held = scope
            with frozen(held):
                terms = self.update(batch, beta, share, only=updated, outer=True)
        if self.watch is not None:
            self.watch.ended_step(started, indices, terms.grad_norm)
        return terms, extra

    def update(self, batch, beta: float, share, *, only=None, outer: bool = False) -> LossTerms:
        """One optimizer step of the configured objective, on all parameters or ``only`` these;
        a diverged step stops training with a one-line error (the parameters stay finite)."""
        options: dict[str, Any] = {}
        for part in self.parts:
            options.update(part.step_options(outer=outer))
        train = self.config.train
        try:
            terms = train_step(
                self.model, self.optimizer, batch, kl_weight=beta, objective=self.config.objective,
                grad_clip=train.grad_clip, update=only, share=share, precision=self.precision, **options,
            )
        except NonFiniteStep as error:
            saved = self.state.saved_step
            kept = (
                f"{CHECKPOINT_DIR}/{LAST} (step {saved}) is the last good checkpoint"
                if saved is not None else "no checkpoint had been written yet"
            )
            raise SeqVAEError(
                f"{self.config.run.dir}: training diverged at step {self.state.step + 1} ({error}); nothing was updated, "
                f"{kept}; lower train.learning_rate (now {train.learning_rate:g}) or set train.grad_clip"
            ) from None
        for part in self.parts:
            part.after_update(self, share)
        return terms

    def log_window(self, beta: float) -> None:
        """Write the metric window's means and start a new window."""
        record = {"split": "train", "step": self.state.step, "epoch": self.state.epoch + 1}
        means = self.state.window.means(language_model=self.model.is_language_model)
        record = {**record, **means, "beta": round_figure(beta), "lr": self.optimizer.param_groups[0]["lr"]}
        self.metrics.write(record)
        if self.watch is not None:
            self.watch.window(record)
        self.state.window = MetricWindow()

    # validation and the choices made on it
    def measure_validation(self, *, shared: bool = False):
        return validation.measure(self, shared=shared)

    def selection_value(self, valid: dict[str, Any]) -> float:
        return validation.selection_value(self.model, self.config, valid)

    def validate(self, **kwargs) -> dict[str, Any]:
        """:func:`seqvae.training.validation.validate`; stopped by a signal, save the step it
        validates and stop (its resumed run validates that step again)."""
        try:
            return validation.validate(self, **kwargs)
        except ValidationInterrupted:
            self.stop_if_signalled(during="validation")
            raise  # not reached: stop_if_signalled raises once a signal is pending

    def keep_if_best(self, valid: dict[str, Any]) -> None:
        """Save best.pt when this validation beats every earlier one on ``train.best_metric``."""
        if self.selection_value(valid) < self.state.best:
            self.state.best = self.selection_value(valid)
            self.save(self.best_path)

    def learning_rate_rule(self, valid: dict[str, Any]) -> bool:
        """The plateau rule at an epoch's end; True when it ends training (stop_after_decays)."""
        note = self.plateau.after_epoch(self.state.epoch, self.selection_value(valid), self._reload_best)
        if note is not None:
            self.say(note)
        return note is not None and self.plateau.done()

    def _reload_best(self, rate: float) -> int | None:
        if not self.world.broadcast(self.best_path.is_file()):
            return None
        payload = checkpointing.read_checkpoint(self.world, self.best_path)
        load_model_state(self.best_path, self.model, payload["model"])
        self.optimizer.load_state_dict(payload["optimizer"])
        for group in self.optimizer.param_groups:
            group["lr"] = rate
        return payload["epoch"]

    # checkpoints and stops
    def save(self, path: Path) -> None:
        checkpointing.save(self, path)

    def restore(self) -> None:
        checkpointing.restore(self, self.last_path)

    def stop_if_signalled(self, *, during: str = "") -> None:
        """After SIGINT or SIGTERM: save a resumable checkpoint of this step and stop."""
        signal_name = self.stops.pending_signal()
        if signal_name is None:
            return
        self.save(self.last_path)
        where = f", during its {during} (the resumed run does it again)," if during else ""
        interrupted = TrainingInterrupted(
            f"{signal_name}: training stopped at step {self.state.step} (epoch {self.state.epoch + 1}){where} and saved to "
            f"{self.last_path}", f"seqvae train {self.run_dir / CONFIG_FILE} --resume")
        if not self.world.main:
            raise ReportedByRankZero(str(interrupted), exit_code=TrainingInterrupted.exit_code)
        raise interrupted

    def budget_spent(self) -> bool:
        return self.stops.budget_spent(self.state.step, self.state.seconds())

    pause_at_step: int | None = None
    """train(pause_at_step=...): where this sitting ends, with nothing else changed."""

    def pause_due(self) -> bool:
        return self.pause_at_step is not None and self.state.step >= self.pause_at_step

    def pause(self) -> None:
        """End the sitting at pause_at_step: a resumable checkpoint of this step, as a signal's."""
        self.save(self.last_path)
        self.say(f"paused at step {self.state.step} (epoch {self.state.epoch + 1}); saved to {self.last_path}")

    def stop_at_budget(self) -> None:
        """A budget (train.max_minutes or train.max_steps) ended the run mid-epoch: validate what it
        reached (unless this step was just validated), keep it if best, and save."""
        train, state = self.config.train, self.state
        if self.stops.out_of_time(state.seconds()):
            key, limit, spent = "train.max_minutes", f"{train.max_minutes:g}", f", {state.seconds() / 60:.1f} min"
        else:
            key, limit, spent = "train.max_steps", str(train.max_steps), ""
        valid = state.valid if state.valid_step == state.step else self.validate(stopped_by=key)
        self.keep_if_best(valid)
        self.save(self.last_path)
        planned = key == "train.max_steps" and train.lr_decay == "wsd"  # the schedule's own end
        self.say(
            f"stopped at {key}={limit} (step {state.step}{spent}): valid {summary(valid)}; "
            + ("the end the learning-rate schedule was laid out for" if planned else f"continue with --resume and a larger {key}")
        )

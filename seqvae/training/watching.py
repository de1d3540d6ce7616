"""Live curves of a training in TensorBoard (``run.tensorboard = true``; the ``tensorboard`` extra).

Rank 0 writes ``RUN/tensorboard/``, to watch with ``tensorboard --logdir RUN/tensorboard`` (or
``--logdir runs`` for every run at once):

- every logged window (``train.log_every`` steps): the window means of ``metrics.jsonl`` (loss,
  rec, KL, the KL term after free bits, the rate multiplier where there is one) and beta and the
  learning rate, as ``train/*``; and two figures that are not in ``metrics.jsonl`` because they
  are not reproducible: the mean gradient norm (before clipping) and the training tokens per
  second (predicted tokens, <eos> included, over the time spent in the steps themselves, not in
  validations or checkpoints);
- every validation: each figure of the ``valid`` record as ``valid/*`` (rec, KL, ELBO, MI, AU,
  the IW bound and BLEU where validation measures them), the KL of each latent dimension on the
  validation set as a histogram, and, as text, the greedy decodes of three codes drawn from
  N(0, I) and the reconstructions of three validation sentences (for a language model, three
  sampled sentences). These use generators of their own: training randomness is untouched.

Resuming continues the same curves: what a stopped sitting logged after its last checkpoint, and
the resumed sitting logs again, is shown once, as the resumed sitting wrote it. The earlier event
files are rewritten without their events past the checkpoint's step (TensorBoard's own purge
marker, which the new file also starts with, hides old scalars and histograms from a TensorBoard
already watching, but not text).
"""

from __future__ import annotations

import importlib
import time
from pathlib import Path
from typing import Any

import torch

from seqvae.errors import SeqVAEError
from seqvae.files import atomic_write_with

TENSORBOARD_DIR = "tensorboard"
"""Sub-directory of a run that holds its TensorBoard event files."""
SHOWN = 3
"""Prior samples and reconstructions written as text at each validation."""
COUNTS = ("step", "epoch", "sentences", "tokens", "iw_samples")
"""Figures of a validation record that are its settings or the set's size, not curves."""
KL_SENTENCES = 2000
"""Validation sentences whose posteriors give the per-dimension KL histogram (the first ones)."""
CHUNK = 256
"""Sentences encoded at once for the histogram."""


def require_tensorboard() -> None:
    """A one-line error naming the missing extra, checked before a run directory is touched."""
    try:  # torch's writer needs the package; so does drop_events_after
        importlib.import_module("tensorboard")
        importlib.import_module("torch.utils.tensorboard")
    except ImportError:
        raise SeqVAEError(
            "config key 'run.tensorboard': the tensorboard package is not installed; "
            "pip install 'seqvae[tensorboard]' (or set run.tensorboard = false)"
        ) from None


def summary_writer(log_dir: Path, purge_step: int | None):
    """torch's SummaryWriter over ``log_dir``."""
    require_tensorboard()
    from torch.utils.tensorboard import SummaryWriter

    return SummaryWriter(str(log_dir), purge_step=purge_step, flush_secs=20)


class TensorBoardLog:
    """What rank 0 writes to TensorBoard during a training (see the module's text)."""

    def __init__(self, trainer, *, resumed_at: int | None) -> None:
        self.trainer = trainer
        # a resumed run's events from the checkpoint's next step on are the resumed sitting's
        log_dir = trainer.run_dir / TENSORBOARD_DIR
        # the new event file holds only its header (step 0) when the older ones are rewritten
        self.writer = summary_writer(log_dir, None if resumed_at is None else resumed_at + 1)
        if resumed_at is not None:
            drop_events_after(log_dir, resumed_at)
        self.lengths = [length + 1 for length in trainer.data.splits["train"].lengths]  # predicted tokens
        self._new_window()

    def _new_window(self) -> None:
        self.tokens, self.seconds, self.norms, self.steps = 0, 0.0, 0.0, 0

    def ended_step(self, started: float, indices: list[int], grad_norm: float | None) -> None:
        """Count one step of the loop: its sentences' tokens, its time and its gradient norm."""
        self.seconds += time.perf_counter() - started
        self.tokens += sum(self.lengths[i] for i in indices)
        if grad_norm is not None:
            self.norms += grad_norm
            self.steps += 1

    def window(self, record: dict[str, Any]) -> None:
        """One logged window: its record of metrics.jsonl and the window's speed and gradient norm."""
        step = record["step"]
        for key, value in record.items():
            if key not in ("split", "step", "epoch") and isinstance(value, (int, float)):
                self.writer.add_scalar(f"train/{key}", value, step)
        if self.steps:
            self.writer.add_scalar("train/grad_norm", self.norms / self.steps, step)
        if self.seconds > 0:
            self.writer.add_scalar("train/tokens_per_s", self.tokens / self.seconds, step)
        self._new_window()

    def validation(self, record: dict[str, Any]) -> None:
        """One validation: its figures, the per-dimension KL and a few decodes as text."""
        step = record["step"]
        for key, value in record.items():
            if key not in COUNTS and isinstance(value, (int, float)) and not isinstance(value, bool):
                self.writer.add_scalar(f"valid/{key}", value, step)
        model = self.trainer.model
        training = model.training
        model.eval()
        try:
            self._texts_and_kl(step)
        finally:
            model.train(training)

    @torch.no_grad()
    def _texts_and_kl(self, step: int) -> None:
        from seqvae.data.batching import collate
        from seqvae.generation import Decoding
        from seqvae.runs import Run

        trainer, model = self.trainer, self.trainer.model
        run = Run(model=model, tokenizer=trainer.tokenizer, config=trainer.config, run_dir=trainer.run_dir, device=trainer.device)
        if model.is_language_model:
            sampled = run.sample(SHOWN, seed=step, decoding=Decoding("sample"))
            self.writer.add_text("valid/samples", _lines(sampled), step)
            return
        self.writer.add_text("valid/prior_samples", _lines(run.sample(SHOWN, seed=step, prior="standard")), step)
        # the validation sentences' own token ids, encoded as validation encodes them
        sequences = trainer.data.splits["valid"].sequences
        encode = lambda part: model.encode(collate(part).to(trainer.device))  # noqa: E731
        originals = [trainer.tokenizer.decode(ids) for ids in sequences[:SHOWN]]
        rebuilt = run.decode(encode(sequences[:SHOWN]).mean)
        self.writer.add_text(
            "valid/reconstructions", _lines(f"{original}  ->  {decoded}" for original, decoded in zip(originals, rebuilt)), step
        )
        if model.posterior.flow is None:  # a flow's KL does not split by dimension
            chunks = range(0, min(len(sequences), KL_SENTENCES), CHUNK)
            kl = torch.cat([encode(sequences[start : start + CHUNK]).kl_per_dimension() for start in chunks]).mean(dim=0)
            self.writer.add_histogram("valid/kl_per_dimension", kl.float().cpu(), step)

    def close(self) -> None:
        self.writer.close()


def drop_events_after(log_dir: Path, step: int) -> None:
    """Rewrite each event file of ``log_dir`` without the events of steps after ``step`` (each
    file replaced whole, or left as it was)."""
    from tensorboard.backend.event_processing.event_file_loader import RawEventFileLoader
    from tensorboard.compat.proto.event_pb2 import Event
    from tensorboard.summary.writer.record_writer import RecordWriter

    for path in sorted(log_dir.glob("events.out.tfevents.*")) if log_dir.is_dir() else []:
        records = list(RawEventFileLoader(str(path)).Load())
        kept = [record for record in records if Event.FromString(record).step <= step]
        if len(kept) == len(records):
            continue

        def write(handle, kept=kept) -> None:
            writer = RecordWriter(handle)
            for record in kept:
                writer.write(record)

        atomic_write_with(path, write)


def _lines(sentences) -> str:
    """Sentences as TensorBoard's markdown text: one per line (blank lines between them)."""
    return "\n\n".join(f"`{sentence}`" for sentence in sentences)

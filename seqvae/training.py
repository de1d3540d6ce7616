"""The one training loop, used by the CLI and the recipes, with checkpoints and exact resume.

A run directory holds:

- ``config.toml``: the resolved configuration (``seqvae train RUN/config.toml`` repeats the run)
- ``tokenizer.json`` (and ``tokenizer.model`` for SentencePiece)
- ``data.json``: sentence, token, blank-line, truncation and drop counts per split
- ``metrics.jsonl``: one JSON record per logged training window and per validation pass
- ``checkpoints/last.pt`` and ``checkpoints/best.pt`` (best validation ELBO, or reconstruction
  with ``train.best_metric = "rec"``)

Exact resume: the last checkpoint holds the model, optimizer and learning-rate scheduler
state_dicts, the global step, the position in the epoch, the RNG states and the partial metric
window. Batch order is a pure function of (seed, epoch) and the KL weight of the step, so a resumed
run computes the same updates and metrics as an uninterrupted one. Validation draws its z from
its own generator seeded by (seed, epoch), so it never perturbs training randomness.

Under torchrun (seqvae.distributed) every process is a rank of one data-parallel training: the
ranks share each global batch (:class:`RankShare`), rank 0 alone writes the run directory, and
the checkpoints hold every rank's generators as well.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import json
import math
import shutil
import signal
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from seqvae.aggressive import AggressiveSwitch, InnerLoopRule
from seqvae.annealing import kl_weight
from seqvae.checkpoints import check_vocabulary, load_checkpoint, load_model_state, save_checkpoint
from seqvae.config import Config, ObjectiveConfig, config_to_dict, config_to_toml, load_config
from seqvae.cuda_graphs import StepGraphs, check_cuda_graphs
from seqvae.data.batching import (
    EVAL_ROW_TOKENS, Batch, EncodedSplit, bucketed_batches, collate, encode_split, sorted_batches,
)
from seqvae.data.corpus import Corpus, load_corpus
from seqvae.data.tokenizers import (
    PUNCTUATED_SHARE, SPECIALS, build_tokenizer, load_tokenizer, punctuated_words, tokenizer_from_files,
)
from seqvae.distributed import SINGLE, StepNoise, World, from_bytes, join, launched, shard_rows, to_bytes
from seqvae.errors import ReportedByRankZero, SeqVAEError, TrainingInterrupted
from seqvae.locks import run_directory_lock
from seqvae.progress import progress_bar
from seqvae.threads import use_threads
from seqvae.evaluation import evaluate_elbo, evaluate_split, free_bits_target
from seqvae.measures import diagnose
from seqvae.files import atomic_write_json, atomic_write_text
from seqvae.losses import LossTerms, Objective, elbo_objective
from seqvae.models.vae import SeqVAE, build_model
from seqvae.rate_constraint import MinimumDesiredRate

CONFIG_FILE = "config.toml"
DATA_FILE = "data.json"
METRICS_FILE = "metrics.jsonl"
CHECKPOINT_DIR = "checkpoints"
LAST = "last.pt"
BEST = "best.pt"

RESUMABLE_CHANGES = {
    ("train", "epochs"),
    ("train", "max_steps"),
    ("train", "max_minutes"),
    ("train", "stop_after_decays"),
    ("train", "cuda_graphs"),
    ("train", "cuda_graph_width"),
    ("run", "dir"),
    ("run", "device"),
    ("run", "threads"),
    ("run", "distributed_backend"),
}
"""Config keys a resumed run may change: how long to train, and where and how the steps run
(``run.dir`` too: a run directory that was moved or copied resumes where it now is, and its saved
config says so; a run begun on the CPU may go on with CUDA graphs on a GPU, whose draws differ)."""


def _resumable() -> str:
    return ", ".join(f"{section}.{key}" for section, key in sorted(RESUMABLE_CHANGES))


def resolve_device(name: str) -> torch.device:
    """``auto`` picks CUDA when it is available; ``cuda`` without a GPU is an error."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise SeqVAEError("run.device=cuda: CUDA is not available on this machine (use auto or cpu)")
    return torch.device(name)


@dataclass
class PreparedData:
    """A corpus tokenized under the run's length policy."""

    tokenizer: Any
    splits: dict[str, EncodedSplit]
    summary: dict[str, dict[str, int]] = field(default_factory=dict)

    def batches(self, split: str, batch_size: int):
        """Evaluation batches of a split: sorted by length, no shuffling, with at most
        ``batch_size * EVAL_ROW_TOKENS`` padded tokens in a batch."""
        sequences = self.splits[split].sequences
        lengths = self.splits[split].lengths
        for indices in sorted_batches(lengths, batch_size=batch_size, max_tokens=batch_size * EVAL_ROW_TOKENS):
            yield collate([sequences[i] for i in indices])


def model_length_limit(model) -> int:
    """The most tokens a sentence may have for a model config (0: no limit). A Transformer with
    learned positions reads at most model.max_positions positions: the encoder the sentence, <eos>
    and perhaps a summary token; the decoder <bos>, the sentence and perhaps a prefix."""
    transformer = "transformer" in (model.encoder, model.decoder)
    return model.max_positions - 2 if transformer and model.positions == "learned" else 0


def max_tokens(config: Config) -> int:
    """The length the policy applies: data.max_length, capped by what the model can read."""
    limits = [limit for limit in (config.data.max_length, model_length_limit(config.model)) if limit]
    return min(limits) if limits else 0


LONG_SENTENCE = 1000
"""Without data.max_length, a sentence of more tokens than this is reported (a line that may hold
a whole document)."""


def prepare_data(config: Config, corpus: Corpus, tokenizer) -> PreparedData:
    """Tokenize every split and count what the length policy did. The policy applies at
    data.max_length, or at the model's own limit (a Transformer's positions) when that is lower,
    to every split, so evaluation never meets a sentence the model cannot read."""
    prepared = PreparedData(tokenizer=tokenizer, splits={})
    limit = max_tokens(config)
    for split, sentences in corpus.splits.items():
        encoded = encode_split(tokenizer, sentences, max_length=limit, policy=config.data.length_policy)
        if not encoded.sequences:
            raise SeqVAEError(
                f"{corpus.sources.get(split, split)}: no {split} sentence is left after "
                f"data.length_policy={config.data.length_policy} with a limit of {limit} tokens "
                f"(data.max_length={config.data.max_length}, model limit {model_length_limit(config.model) or 'none'})"
            )
        prepared.splits[split] = encoded
        prepared.summary[split] = {
            "sentences": len(encoded.sequences),
            "tokens_with_eos": encoded.num_tokens,
            "blank_lines_skipped": corpus.blank_lines.get(split, 0),
            "truncated": encoded.truncated,
            "dropped": encoded.dropped,
            "longest_tokens": encoded.longest,
        }
    return prepared


def _noise_seed(seed: int, step: int) -> int:
    """The seed of the generator of the z and word-dropout noise under torchrun (at ``step`` when
    a run without torchrun continues under it)."""
    return seed * 104_729 + 1 + step


def _rank_seed(seed: int, rank: int, step: int) -> int:
    """The seed of rank r's own default generator (dropout) under torchrun; rank 0 keeps the
    run's seed."""
    return seed * 1_299_709 + 7_919 * rank + step


@contextlib.contextmanager
def agreement(world: World):
    """A block of checks that rank 0 alone makes (the run directory, a checkpoint): when it raises
    a SeqVAEError there, every rank stops with that status (rank 0 reports it), instead of the
    others waiting for it at the next collective."""
    if not world.parallel:
        yield
        return
    problem = None
    try:
        yield
    except SeqVAEError as error:
        if not world.main:
            raise
        problem = error
    reported = world.broadcast((str(problem), problem.exit_code) if problem is not None else None)
    if problem is not None:
        raise problem
    if reported is not None:
        raise ReportedByRankZero(reported[0], exit_code=reported[1])


def _validation_generator(seed: int, epoch: int) -> torch.Generator:
    generator = torch.Generator()
    generator.manual_seed(seed * 7_919 + epoch + 1)
    return generator


@dataclass
class TrainResult:
    """What a finished (or stopped) training call leaves behind."""

    run_dir: Path
    step: int
    epoch: int
    valid: dict[str, float] | None
    best_valid: float
    data: dict[str, dict[str, int]]
    resumed_from_step: int | None = None
    seconds: float = 0.0
    finished: bool = False
    """The run reached its end (train.epochs, or train.stop_after_decays), not a budget."""
    train_seconds: float = 0.0
    """Training time of the whole run, earlier sittings included."""


def _check_run_dir(config: Config, run_dir: Path, *, resume: bool, overwrite: bool) -> None:
    """Refuse what would lose work, before anything is written."""
    if run_dir.exists() and not run_dir.is_dir():
        raise SeqVAEError(f"{run_dir}: run directory path is a file")
    if resume:
        if not (run_dir / CHECKPOINT_DIR / LAST).is_file():
            raise SeqVAEError(f"{run_dir}: nothing to resume (no {CHECKPOINT_DIR}/{LAST})")
        _check_resumable(run_dir, load_config(run_dir / CONFIG_FILE), config)
    elif run_dir.exists() and any(run_dir.iterdir()):
        if not overwrite:
            raise SeqVAEError(f"{run_dir}: run directory exists; pass --resume to continue it or --overwrite to replace it")
        if not (run_dir / CONFIG_FILE).is_file():
            raise SeqVAEError(f"{run_dir}: exists and is not a seqvae run directory (no {CONFIG_FILE}); refusing to replace it")


def _create_run_dir(run_dir: Path) -> None:
    """A fresh run directory; an old one is removed only now that the new run's input is checked."""
    if run_dir.exists():
        shutil.rmtree(run_dir)
    (run_dir / CHECKPOINT_DIR).mkdir(parents=True)


def _check_resumable(run_dir: Path, saved: Config, given: Config) -> None:
    saved_dict, given_dict = config_to_dict(saved), config_to_dict(given)
    for section, values in saved_dict.items():
        for key, value in values.items():
            if (section, key) in RESUMABLE_CHANGES:
                continue
            if given_dict[section][key] != value:
                raise SeqVAEError(
                    f"{run_dir / CONFIG_FILE}: cannot resume with {section}.{key}={given_dict[section][key]!r}; "
                    f"the run was started with {value!r} (only {_resumable()} may change)"
                )


def _read_metrics(path: Path, up_to_step: int) -> list[str]:
    """The metric lines a checkpoint at ``up_to_step`` had seen; later ones are recomputed."""
    if not path.is_file():
        return []
    kept = []
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.strip() and json.loads(line)["step"] <= up_to_step:
            kept.append(line)
    return kept


class _NoMetrics:
    """The metrics log of a rank other than 0, which writes nothing."""

    def write(self, record: dict[str, Any]) -> None:
        pass


class _MetricsLog:
    def __init__(self, path: Path, lines: list[str]) -> None:
        self.path = path
        atomic_write_text(path, "".join(line + "\n" for line in lines))

    def write(self, record: dict[str, Any]) -> None:
        with open(self.path, "a", encoding="utf-8") as handle:
            handle.write(json.dumps(record) + "\n")


@dataclass
class RankShare:
    """One rank's part of a global batch under torchrun (seqvae.distributed): what
    :func:`train_step` needs beside the rows themselves.

    The rank's loss is weighted by ``rows * W / sentences``, so that the gradients averaged over
    the W ranks are those of the global batch mean; a rank without a row of a small batch runs one
    stand-in row at weight 0."""

    world: World
    noise: StepNoise
    rows: int
    """This rank's sentences of the batch (0: the batch had fewer sentences than ranks)."""
    sentences: int
    """The global batch's sentences."""
    tokens: int
    """The global batch's predicted tokens."""
    device: torch.device
    forward: Callable | None = None
    """The DistributedDataParallel module, which averages the gradients during backward; None:
    :meth:`average_gradients` averages them after backward."""
    flags: tuple[float, ...] = ()
    """Numbers summed over the ranks with the step's figures (the trainer's stop requests)."""
    summed_flags: tuple[float, ...] = ()

    @property
    def weight(self) -> float:
        return self.rows * self.world.size / self.sentences

    def batch_mean(self, values: torch.Tensor) -> torch.Tensor:
        """The global batch's mean of per-sentence ``values`` (B, ...) over sentences, detached."""
        total = values.detach()[: self.rows].sum(0)
        return self.world.sum(total.contiguous()) / self.sentences

    def average_gradients(self, parameters: list[torch.nn.Parameter]) -> None:
        """Average the gradients over the ranks as DistributedDataParallel does: a parameter
        without a gradient on this rank counts as zeros when another rank has one, and keeps none
        when no rank has one (so that Adam skips it, as in one process)."""
        if not self.world.parallel:
            return
        present = torch.tensor([float(p.grad is not None) for p in parameters], device=self.device)
        self.world.sum(present)
        used = [p for p, count in zip(parameters, present.tolist()) if count > 0]
        if not used:
            return
        flat = torch.cat([(p.grad if p.grad is not None else torch.zeros_like(p)).reshape(-1) for p in used])
        self.world.sum(flat)
        flat /= self.world.size
        offset = 0
        for parameter in used:
            size = parameter.numel()
            parameter.grad = flat[offset : offset + size].view_as(parameter).clone()
            offset += size

    def reduce(self, figures: torch.Tensor) -> torch.Tensor:
        """The global batch's (loss, reconstruction, kl, kl_penalty) from every rank's (float64,
        shape (4,), as :class:`seqvae.losses.Objective` holds them), and the flags summed."""
        flags = torch.tensor(list(self.flags), dtype=torch.float64, device=self.device)
        summed = torch.cat([figures.to(self.device) * self.rows, flags])
        self.world.sum(summed)
        self.summed_flags = tuple(summed[4:].tolist())
        return summed[:4] / self.sentences


class Precision:
    """``train.precision``: autocast to bf16 or fp16 for the forward on CUDA, with a gradient
    scaler for fp16 (its loss scale skips the steps whose gradients overflow); fp32 does nothing."""

    def __init__(self, name: str, device: torch.device) -> None:
        self.name = name
        self.device = device
        self.dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(name)
        self.scaler = torch.amp.GradScaler(device.type) if name == "fp16" else None

    def autocast(self, *, cache: bool = True):
        """The forward's autocast; ``cache=False`` for a CUDA graph's capture, in which autocast's
        cache of cast weights must not be kept."""
        if self.dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=self.dtype, cache_enabled=cache)


def train_step(
    model: SeqVAE,
    optimizer: torch.optim.Optimizer,
    batch: Batch,
    *,
    kl_weight: float,
    objective: ObjectiveConfig,
    grad_clip: float,
    rate_constraint: MinimumDesiredRate | None = None,
    update: list[torch.nn.Parameter] | None = None,
    share: RankShare | None = None,
    precision: Precision | None = None,
    graphs: StepGraphs | None = None,
) -> LossTerms:
    """One update: forward with word dropout, ELBO with free bits (and the rate constraint, whose
    multiplier then takes its ascent step), backward, clipping, step.

    ``update``: the parameters this step changes (default all). The others keep their values and
    their optimizer state (Adam skips a parameter without a gradient); aggressive training updates
    the encoder alone, then the decoder alone.

    ``share``: this process is one rank of a data-parallel training and ``batch`` its rows of the
    global batch; the returned figures are the global batch's. ``precision``: autocast (and the
    fp16 gradient scaler) of ``train.precision``. ``graphs``: the forward, the objective and the
    backward replayed from CUDA graphs (``train.cuda_graphs``, seqvae.cuda_graphs); they hold the
    objective and the precision they were made with, and take no ``update``, ``share``, rate
    constraint or gradient scaler."""
    scaler = precision.scaler if precision is not None else None
    if graphs is not None:
        if update is not None or share is not None or rate_constraint is not None or scaler is not None:
            raise ValueError("a CUDA-graph step updates every parameter of one process, without a rate constraint or fp16")
        goal = graphs.forward_backward(batch, kl_weight)
    else:
        goal = _forward_backward(
            model, optimizer, batch, kl_weight=kl_weight, objective=objective, rate_constraint=rate_constraint,
            share=share, precision=precision,
        )
    figures = goal.figures
    parameters = list(model.parameters()) if update is None else update
    if update is not None:
        chosen = {id(parameter) for parameter in update}
        for parameter in model.parameters():
            if id(parameter) not in chosen:
                parameter.grad = None
    if share is not None:
        if share.forward is None:
            share.average_gradients(parameters)
        if rate_constraint is not None:
            share.average_gradients([rate_constraint.multiplier])
        figures = share.reduce(figures)
    if scaler is not None:
        scaler.unscale_(optimizer)
        if rate_constraint is not None and rate_constraint.multiplier.grad is not None:
            rate_constraint.multiplier.grad /= scaler.get_scale()
    if grad_clip > 0:
        norm = torch.nn.utils.clip_grad_norm_(parameters, grad_clip)
    else:
        norm = torch.nn.utils.get_total_norm([parameter.grad for parameter in parameters if parameter.grad is not None])
    # The step's one read from the device: its figures and the gradient norm (and a flow's KL
    # spread), after the backward pass and the clipping are queued (a read before them would
    # stall a GPU's queue mid-step).
    spread = [goal.kl_std] if goal.kl_std is not None else []
    *values, norm_value = torch.cat([figures, *spread, norm.detach().double().reshape(1)]).tolist()
    terms = goal.terms(values)
    # with fp16, an overflowing gradient is the scaler's to skip; a loss that is not finite is divergence
    if not (math.isfinite(terms.loss) and (scaler is not None or math.isfinite(norm_value))):  # nothing is updated
        optimizer.zero_grad(set_to_none=True)
        raise NonFiniteStep(terms.loss, norm_value)
    if scaler is not None:
        scaler.step(optimizer)
        scaler.update()
    else:
        optimizer.step()
    if rate_constraint is not None:
        rate_constraint.ascend()
    return terms


def _forward_backward(
    model, optimizer, batch, *, kl_weight, objective, rate_constraint=None, share=None, precision=None, capturing=False
) -> Objective:
    """train_step's forward, objective and backward (gradients set afresh), eagerly or, with
    ``capturing``, as a CUDA graph records it (autocast without its cache of cast weights)."""
    forward = share.forward if share is not None and share.forward is not None else model
    autocast = precision.autocast(cache=not capturing) if precision is not None else contextlib.nullcontext()
    scaler = precision.scaler if precision is not None else None
    with autocast:
        output = forward(batch, word_dropout_rate=objective.word_dropout, noise=share.noise if share is not None else None)
    goal = elbo_objective(
        output,
        batch,
        kl_weight=kl_weight,
        free_bits=objective.free_bits,
        free_bits_lambda=objective.free_bits_lambda,
        rate_constraint=rate_constraint,
        batch_mean=share.batch_mean if share is not None else None,
    )
    optimizer.zero_grad(set_to_none=True)
    total = goal.total if share is None else goal.total * share.weight
    (scaler.scale(total) if scaler is not None else total).backward()
    return goal


def graphed_step(model, optimizer, *, objective, precision, width_multiple: int = 8, capture=None) -> StepGraphs:
    """The :class:`~seqvae.cuda_graphs.StepGraphs` of ``train.cuda_graphs``: train_step's own
    forward, objective and backward, recorded per batch shape (``capture``: the recording, CUDA
    graphs on CUDA by default)."""
    step = functools.partial(_forward_backward, model, optimizer, objective=objective, precision=precision, capturing=True)
    return StepGraphs(model, step, width_multiple=width_multiple, capture=capture)


class NonFiniteStep(Exception):
    """A step whose loss or gradient norm is not finite: training has diverged. Raised before the
    optimizer step, so the parameters keep their last finite values."""

    def __init__(self, loss: float, gradient_norm: float) -> None:
        super().__init__(f"loss {loss:.4g}, gradient norm {gradient_norm:.4g}")
        self.loss, self.gradient_norm = loss, gradient_norm


@contextlib.contextmanager
def _frozen(parameters: list[torch.nn.Parameter]):
    """No gradients for these parameters inside the block (backward skips their weight gradients)."""
    flags = [parameter.requires_grad for parameter in parameters]
    for parameter in parameters:
        parameter.requires_grad_(False)
    try:
        yield
    finally:
        for parameter, flag in zip(parameters, flags):
            parameter.requires_grad_(flag)


def _round(value):
    """Six significant digits for the metrics file; counts, names and lists stay as they are."""
    return float(f"{value:.6g}") if isinstance(value, float) else value


class _MetricWindow:
    """Running sums of the training terms between two log records, and of what some methods add:
    ``multiplier`` (the minimum-desired-rate |lambda|) and ``inner_steps`` (aggressive training's
    encoder-only updates before each decoder update)."""

    KEYS = ("loss", "rec", "kl", "kl_penalty")

    def __init__(self, sums: dict[str, float] | None = None) -> None:
        self.sums = dict(sums) if sums else {key: 0.0 for key in (*self.KEYS, "steps")}

    def add(self, terms: LossTerms, **extra: float) -> None:
        values = (terms.loss, terms.reconstruction, terms.kl, terms.kl_penalty)
        for key, value in zip(self.KEYS, values):
            self.sums[key] += value
        if terms.multiplier is not None:
            extra["multiplier"] = terms.multiplier
        if terms.kl_std is not None:
            extra["kl_std"] = terms.kl_std
        for key, value in extra.items():
            self.sums[key] = self.sums.get(key, 0.0) + value
        self.sums["steps"] += 1

    def means(self) -> dict[str, float]:
        return {key: _round(value / self.sums["steps"]) for key, value in self.sums.items() if key != "steps"}


def build_optimizer(parameters, *, learning_rate: float, device: torch.device, kind: str = "adam") -> torch.optim.Optimizer:
    """Adam (Kingma & Ba 2015) with the fused kernel where PyTorch has one for the device (CPU and
    CUDA): the same update as the default, computed in one pass over the parameters instead of
    several (3.5 times faster on a CPU at PTB sizes, about a tenth of a whole training step); or
    plain SGD (``kind="sgd"``)."""
    if kind == "sgd":
        return torch.optim.SGD(parameters, lr=learning_rate)
    return torch.optim.Adam(parameters, lr=learning_rate, fused=True if device.type in ("cpu", "cuda") else None)


def _build_optimization(config: Config, model: SeqVAE, device: torch.device):
    """The optimizer, and the plateau scheduler when ``train.lr_decay = "plateau"``."""
    optimizer = build_optimizer(
        model.parameters(), learning_rate=config.train.learning_rate, device=device, kind=config.train.optimizer
    )
    if config.train.lr_decay != "plateau":
        return optimizer, None
    scheduler = torch.optim.lr_scheduler.ReduceLROnPlateau(
        optimizer,
        mode="min",
        factor=config.train.lr_decay_factor,
        patience=config.train.lr_patience,
        min_lr=config.train.min_learning_rate,
    )
    return optimizer, scheduler


class _Trainer:
    """The state of one training run and the steps that change it."""

    def __init__(
        self,
        config: Config,
        data: PreparedData,
        device: torch.device,
        say: Callable[[str], None],
        *,
        progress: bool = False,
        world: World = SINGLE,
    ) -> None:
        self.config, self.data, self.device, self.say, self.progress = config, data, device, say, progress
        self.world = world
        self.tokenizer = data.tokenizer
        torch.manual_seed(config.run.seed)
        self.model = build_model(
            config.model, vocab_size=self.tokenizer.vocab_size, pad_id=self.tokenizer.pad_id, unk_id=self.tokenizer.unk_id
        ).to(device)
        # Under torchrun: the noise of every step from a generator all ranks hold in the same state
        # (seqvae.distributed), and each rank's own default generator (dropout) seeded apart.
        self.noise_generator = torch.Generator().manual_seed(_noise_seed(config.run.seed, 0)) if world.launched else None
        if world.rank:
            torch.manual_seed(_rank_seed(config.run.seed, world.rank, 0))
        self.precision = Precision(config.train.precision, device)
        self.forward = None  # the DistributedDataParallel module, once distribute() made it
        self.optimizer, self.scheduler = _build_optimization(config, self.model, device)
        self.graphs = None
        if config.train.cuda_graphs:
            self.graphs = graphed_step(
                self.model, self.optimizer, objective=config.objective, precision=self.precision,
                width_multiple=config.train.cuda_graph_width,
            )
        self.rate_constraint = None
        if config.objective.free_bits == "mdr":
            self.rate_constraint = MinimumDesiredRate(
                rate=config.objective.free_bits_lambda,
                learning_rate=config.objective.mdr_learning_rate,
                initial=config.objective.mdr_initial_multiplier,
            ).to(device)
        self.switch = AggressiveSwitch(on=config.train.aggressive)
        encoder_parts = [part for part in (self.model.encoder, self.model.posterior) if part is not None]
        self.encoder_parameters = [p for part in encoder_parts for p in part.parameters() if p.requires_grad]
        self.decoder_parameters = [p for p in self.model.decoder.parameters() if p.requires_grad]
        self.step = self.epoch = self.batch_in_epoch = 0  # checkpoints record the next batch to run
        self.seconds_before = 0.0  # training time of earlier sittings (train.max_minutes counts them)
        self.started = time.perf_counter()
        self.best = float("inf")
        self.decays = 0  # learning-rate decays so far (train.stop_after_decays)
        self.window = _MetricWindow()
        self.valid: dict[str, float] | None = None
        self.valid_step: int | None = None  # the step self.valid was measured at
        self.saved_step: int | None = None  # the step of the last checkpoint written to last.pt
        self.signal: str | None = None  # SIGINT or SIGTERM received: save and stop after this step
        self.validating = False  # in a validation that a signal stops at once (one process)
        # under torchrun, the stop requests every rank agreed on at the last step (signals, time)
        self.agreed_signal: str | None = None
        self.agreed_out_of_time = False

    def distribute(self) -> None:
        """Under torchrun with several ranks: every rank starts from rank 0's weights, and the
        model is wrapped in DistributedDataParallel (with SyncBatchNorm for BN-VAE on CUDA).
        Aggressive training, which updates the encoder and the decoder apart, averages its
        gradients itself (RankShare.average_gradients) instead."""
        if not self.world.parallel:
            return
        for tensor in self.model.state_dict().values():
            torch.distributed.broadcast(tensor, src=0)
        if self.config.train.aggressive:
            return
        module = self.model
        if self.device.type == "cuda" and self.config.model.posterior == "batchnorm":
            module = torch.nn.SyncBatchNorm.convert_sync_batchnorm(module)
        self.forward = torch.nn.parallel.DistributedDataParallel(
            module,
            device_ids=[self.device.index] if self.device.type == "cuda" else None,
            # the adaptive softmax computes a tail cluster only when a target of the rank's rows lies in it
            find_unused_parameters=self.config.model.output_layer == "adaptive",
        )

    def read_checkpoint(self, path: Path) -> dict[str, Any]:
        """A checkpoint's payload on every rank: read by rank 0 and sent to the others (the run
        directory need not be on a filesystem every node sees); an error stops every rank.

        The payload stays on the CPU whatever the run's device: the RNG states must be CPU byte
        tensors (torch.set_rng_state refuses a CUDA one), and load_state_dict copies weights and
        optimizer moments to the parameters' device itself."""
        if not self.world.parallel:
            return load_checkpoint(path, map_location="cpu")
        data = None
        with agreement(self.world):
            if self.world.main:
                data = to_bytes(load_checkpoint(path, map_location="cpu"))
        return from_bytes(self.world.broadcast(data), torch.device("cpu"))

    def restore(self, path: Path) -> None:
        """Continue from a checkpoint: weights, optimizer, scheduler, position and RNG states."""
        payload = self.read_checkpoint(path)
        check_vocabulary(path, payload, self.tokenizer)
        load_model_state(path, self.model, payload["model"])
        self.optimizer.load_state_dict(payload["optimizer"])
        if self.precision.scaler is not None and payload.get("grad_scaler"):
            self.precision.scaler.load_state_dict(payload["grad_scaler"])
        if self.scheduler is not None and payload.get("lr_scheduler"):
            self.scheduler.load_state_dict(payload["lr_scheduler"])
        self.step, self.epoch, self.batch_in_epoch = payload["step"], payload["epoch"], payload["batch_in_epoch"]
        self.saved_step = self.step
        self.best = payload["best_valid"]
        self.decays = payload.get("lr_decays", 0)
        self.seconds_before = payload.get("train_seconds", 0.0)
        self.window = _MetricWindow(payload["window"])
        if self.rate_constraint is not None:
            self.rate_constraint.restore(payload["rate_constraint"])
        if payload.get("aggressive"):
            self.switch.load_state_dict(payload["aggressive"])
        if self.world.launched:
            self._restore_rank_generators(payload)
            return
        if payload.get("world_size"):
            self.say(
                f"resumed without torchrun a run checkpointed by {payload['world_size']} torchrun processes: z and "
                "word-dropout noise are drawn inside the model from here on, so the run is not bit-exact with an "
                "uninterrupted one"
            )
        torch.set_rng_state(payload["rng_cpu"])
        if self.device.type == "cuda" and payload.get("rng_cuda"):
            torch.cuda.set_rng_state_all(payload["rng_cuda"])

    def _restore_rank_generators(self, payload: dict[str, Any]) -> None:
        """Under torchrun: the shared noise generator, and this rank's own generators when the
        checkpoint has this rank's (same world size: the run continues bit-exactly on the CPU);
        a rank the checkpoint did not have seeds them from (seed, rank, step)."""
        seed = self.config.run.seed
        if payload.get("noise_rng") is not None:
            self.noise_generator.set_state(payload["noise_rng"])
        else:  # a checkpoint of a run without torchrun
            self.noise_generator.manual_seed(_noise_seed(seed, self.step))
        states = payload.get("rng_ranks") or ([payload["rng_cpu"]] if not payload.get("world_size") else [])
        if self.world.rank < len(states):
            torch.set_rng_state(states[self.world.rank])
        else:
            torch.manual_seed(_rank_seed(seed, self.world.rank, self.step))
        cuda_states = payload.get("rng_cuda_ranks") or []
        if self.device.type == "cuda" and self.world.rank < len(cuda_states):
            torch.cuda.set_rng_state(cuda_states[self.world.rank], self.device)
        saved = payload.get("world_size", 1)
        if saved != self.world.size:
            self.say(
                f"resumed with {self.world.size} processes a run checkpointed with {saved}: batches, z and word-dropout "
                "noise continue as they were; model.dropout draws and the order of floating-point sums differ, "
                "so the run is not bit-exact with an uninterrupted one"
            )

    def save(self, path: Path) -> None:
        """Write a checkpoint atomically; weights that are not finite are never written."""
        state = self.model.state_dict()
        if not all(bool(torch.isfinite(tensor).all()) for tensor in state.values() if tensor.is_floating_point()):
            raise SeqVAEError(f"{path}: not written, the model's weights are not finite (training diverged)")
        if path.name == LAST:
            self.saved_step = self.step
        ranks = {}
        if self.world.launched:  # every rank's generators, gathered to rank 0 (a collective: all ranks save)
            ranks["rng_ranks"] = self.world.gather(torch.get_rng_state())
            if self.device.type == "cuda":
                ranks["rng_cuda_ranks"] = self.world.gather(torch.cuda.get_rng_state(self.device).cpu())
            ranks.update(noise_rng=self.noise_generator.get_state(), world_size=self.world.size)
        if not self.world.main:
            return
        save_checkpoint(
            path,
            {
                "model": state,
                "optimizer": self.optimizer.state_dict(),
                "lr_scheduler": self.scheduler.state_dict() if self.scheduler is not None else {},
                "step": self.step,
                "epoch": self.epoch,
                "batch_in_epoch": self.batch_in_epoch,
                "best_valid": self.best,
                "lr_decays": self.decays,
                "train_seconds": self.seconds(),
                "window": self.window.sums,
                "rate_constraint": self.rate_constraint.checkpoint() if self.rate_constraint is not None else {},
                "aggressive": self.switch.state_dict() if self.config.train.aggressive else {},
                "rng_cpu": torch.get_rng_state(),
                "rng_cuda": torch.cuda.get_rng_state_all() if self.device.type == "cuda" and not self.world.launched else [],
                **ranks,
                "grad_scaler": self.precision.scaler.state_dict() if self.precision.scaler is not None else {},
                "config": config_to_dict(self.config),
                "vocab_fingerprint": self.tokenizer.fingerprint,
                "vocab_size": self.tokenizer.vocab_size,
            },
        )

    def warm_start(self) -> None:
        """Copy ``train.init_parts`` from the best checkpoint of ``train.init_from`` (Li et al.
        2019); the other parts keep the initialisation drawn from the seed."""
        config = self.config.train
        copied = load_parts(self.model, config.init_from, config.init_parts, self.tokenizer)
        self.say(f"warm start: {', '.join(config.init_parts)} ({copied} tensors) from {config.init_from}")

    def selection_value(self, valid: dict[str, Any]) -> float:
        """The validation figure that picks best.pt and drives the plateau decay: ``train.best_metric``,
        or the exact NLL of a language model (which has neither ELBO nor reconstruction)."""
        return valid["nll"] if self.model.is_language_model else valid[self.config.train.best_metric]

    def keep_if_best(self, valid: dict[str, Any], best_path: Path) -> None:
        """Save best.pt when this validation beats every earlier one on ``train.best_metric``."""
        if self.selection_value(valid) < self.best:
            self.best = self.selection_value(valid)
            self.save(best_path)

    def plateau_step(self, valid: dict[str, Any], best_path: Path) -> bool:
        """The learning-rate rule at an epoch's end (``train.lr_decay = "plateau"``): count a stall
        from epoch lr_decay_start on, decay the rate after lr_patience stalls, go back to best.pt
        if lr_decay_reload_best; True when training should stop (stop_after_decays reached)."""
        config = self.config.train
        if self.scheduler is None or self.epoch <= config.lr_decay_start:  # self.epoch: epochs finished
            return False
        before = self.optimizer.param_groups[0]["lr"]
        self.scheduler.step(self.selection_value(valid))
        rate = self.optimizer.param_groups[0]["lr"]
        if rate >= before:
            return False
        self.decays += 1
        note = f"epoch {self.epoch}: learning rate {before:.3g} -> {rate:.3g} (decay {self.decays})"
        if config.lr_decay_reload_best and self.world.broadcast(best_path.is_file()):
            payload = self.read_checkpoint(best_path)
            load_model_state(best_path, self.model, payload["model"])
            self.optimizer.load_state_dict(payload["optimizer"])
            for group in self.optimizer.param_groups:
                group["lr"] = rate
            note += f"; weights and optimizer state back to best.pt (epoch {payload['epoch']})"
        self.say(note)
        return bool(config.stop_after_decays) and self.decays >= config.stop_after_decays

    def seconds(self) -> float:
        """Training time so far, earlier sittings included."""
        return self.seconds_before + time.perf_counter() - self.started

    def out_of_time(self) -> bool:
        """train.max_minutes is spent (under torchrun: as the ranks agreed at the last step)."""
        if self.world.launched:
            return self.agreed_out_of_time
        return self._over_minutes()

    def _over_minutes(self) -> bool:
        limit = self.config.train.max_minutes
        return bool(limit) and self.seconds() >= 60.0 * limit

    def pending_signal(self) -> str | None:
        """The signal to stop at (under torchrun: the one the ranks agreed on at the last step, so
        that every rank stops after the same step whichever received it)."""
        return self.agreed_signal if self.world.launched else self.signal

    def take(self, indices: list[int]) -> tuple[Batch, RankShare | None]:
        """The batch of these training sentences this process trains on: all of them, or under
        torchrun this rank's rows with the global batch's noise."""
        sequences = self.data.splits["train"].sequences
        if not self.world.launched:
            return collate([sequences[i] for i in indices]).to(self.device), None
        rows = shard_rows(len(indices), self.world)
        kept = rows or [0]  # a stand-in row at weight 0 when the batch has fewer sentences than ranks
        batch = collate([sequences[indices[row]] for row in kept]).to(self.device)
        rate = self.config.objective.word_dropout
        noise = StepNoise.draw(
            self.noise_generator,
            sentences=len(indices),
            width=max(len(sequences[i]) for i in indices) + 1,
            latent_dim=self.model.latent_dim,
            rows=kept,
            row_width=batch.inputs.shape[1],
            word_dropout=0.0 < rate < 1.0,
            device=self.device,
        )
        flags = (float(self.signal == "SIGINT"), float(self.signal == "SIGTERM"), float(self._over_minutes()))
        return batch, RankShare(
            world=self.world,
            noise=noise,
            rows=len(rows),
            sentences=len(indices),
            tokens=sum(len(sequences[i]) + 1 for i in indices),
            device=self.device,
            forward=self.forward,
            flags=flags,
        )

    def agree(self, share: RankShare | None) -> None:
        """Take the stop requests the ranks summed with a step's figures."""
        if share is None or not share.summed_flags:
            return
        interrupted, terminated, late = share.summed_flags
        if interrupted or terminated:
            self.agreed_signal = "SIGINT" if interrupted else "SIGTERM"
        self.agreed_out_of_time = self.agreed_out_of_time or late > 0

    def run_epoch(self, metrics: _MetricsLog, last_path: Path) -> bool:
        """Train on the rest of the current epoch; False when train.max_steps or
        train.max_minutes stopped it early."""
        config = self.config
        batches = bucketed_batches(
            self.data.splits["train"].lengths,
            batch_size=config.train.batch_size,
            seed=config.run.seed,
            epoch=self.epoch,
            pool_batches=config.train.bucket_batches,
        )
        bar = progress_bar(
            total=len(batches), initial=self.batch_in_epoch, desc=f"epoch {self.epoch + 1}/{config.train.epochs}", disable=not self.progress
        )
        self.model.train()
        try:
            while self.batch_in_epoch < len(batches):
                self.stop_if_signalled(last_path)
                if config.train.max_steps and self.step >= config.train.max_steps:
                    return False
                if self.out_of_time():
                    return False
                indices = batches[self.batch_in_epoch]
                beta = kl_weight(self.step, config.annealing)
                extra = {}
                if config.train.aggressive:
                    extra["inner_steps"] = self.aggressive_inner_loop(indices, batches, beta) if self.switch.on else 0
                batch, share = self.take(indices)
                if self.switch.on:  # aggressive phase: this step updates the decoder alone
                    with _frozen(self.encoder_parameters):
                        terms = self._update(batch, beta, share, only=self.decoder_parameters, rate_constraint=self.rate_constraint)
                else:
                    terms = self._update(batch, beta, share, rate_constraint=self.rate_constraint)
                self.agree(share)
                self.step += 1
                self.batch_in_epoch += 1
                self.window.add(terms, **extra)
                bar.set_postfix(self._progress(terms, beta, extra), refresh=False)  # drawn by update()
                bar.update(1)
                if self.step % config.train.log_every == 0:
                    record = {"split": "train", "step": self.step, "epoch": self.epoch + 1, **self._window_means()}
                    metrics.write({**record, "beta": _round(beta), "lr": self.optimizer.param_groups[0]["lr"]})
                    self.window = _MetricWindow()
                every = config.train.checkpoint_every
                if every and self.step % every == 0 and self.batch_in_epoch < len(batches):
                    self.save(last_path)  # an epoch's end is checkpointed after its validation
        finally:
            bar.close()
        return True

    def _update(self, batch: Batch, beta: float, share: RankShare | None, *, only=None, rate_constraint=None) -> LossTerms:
        """One optimizer step of the configured objective, on all parameters or ``only`` these;
        a diverged step stops training with a one-line error (the parameters stay finite)."""
        try:
            return train_step(
                self.model,
                self.optimizer,
                batch,
                kl_weight=beta,
                objective=self.config.objective,
                grad_clip=self.config.train.grad_clip,
                rate_constraint=rate_constraint,
                update=only,
                share=share,
                precision=self.precision,
                graphs=self.graphs,
            )
        except NonFiniteStep as error:
            kept = (
                f"{CHECKPOINT_DIR}/{LAST} (step {self.saved_step}) is the last good checkpoint"
                if self.saved_step is not None
                else "no checkpoint had been written yet"
            )
            raise SeqVAEError(
                f"{self.config.run.dir}: training diverged at step {self.step + 1} ({error}); nothing was updated, "
                f"{kept}; lower train.learning_rate (now {self.config.train.learning_rate:g}) or set train.grad_clip"
            ) from None

    def stop_if_signalled(self, last_path: Path, *, during: str = "") -> None:
        """After SIGINT or SIGTERM: save a resumable checkpoint of this step and stop."""
        signal_name = self.pending_signal()
        if signal_name is None:
            return
        self.save(last_path)
        where = f", during its {during} (the resumed run does it again)," if during else ""
        message = (
            f"{signal_name}: training stopped at step {self.step} (epoch {self.epoch + 1}){where} and saved to {last_path}; "
            f"continue with: seqvae train {Path(self.config.run.dir) / CONFIG_FILE} --resume"
        )
        if not self.world.main:
            raise ReportedByRankZero(message, exit_code=TrainingInterrupted.exit_code)
        raise TrainingInterrupted(message)

    def _progress(self, terms: LossTerms, beta: float, extra: dict[str, float]) -> dict[str, str]:
        """The progress bar's figures for a step."""
        if self.model.is_language_model:
            return {"nll": f"{terms.reconstruction:.2f}"}
        shown = {"loss": f"{terms.loss:.2f}", "rec": f"{terms.reconstruction:.2f}", "kl": f"{terms.kl:.2f}", "beta": f"{beta:.3f}"}
        if "inner_steps" in extra:
            shown["inner"] = str(extra["inner_steps"])
        if terms.multiplier is not None:
            shown["lambda"] = f"{terms.multiplier:.3f}"
        return shown

    def _window_means(self) -> dict[str, float]:
        means = self.window.means()
        if self.model.is_language_model:  # no KL to log: the reconstruction is the exact NLL
            means = {"loss": means["loss"], "nll": means["rec"]}
        return means

    def aggressive_inner_loop(self, indices: list[int], batches: list[list[int]], beta: float) -> int:
        """He et al. 2019's inner loop before one decoder update: encoder-and-posterior-only steps,
        first on the outer step's batch, then on random batches of the epoch, until
        :class:`~seqvae.aggressive.InnerLoopRule` stops it. The random batches come from a
        generator seeded by (seed, step), so a resumed run draws the same ones. Returns the number
        of inner steps taken. (The inner loop runs inside one outer step, between checkpoints.)"""
        config = self.config
        rule = InnerLoopRule(check_every=config.train.aggressive_check_every, max_steps=config.train.aggressive_max_inner_steps)
        generator = torch.Generator().manual_seed(config.run.seed * 1_000_003 + self.step)
        with _frozen(self.decoder_parameters):
            while True:
                batch, share = self.take(indices)
                terms = self._update(batch, beta, share, only=self.encoder_parameters)
                self.agree(share)
                # the global batch's loss (under torchrun every rank takes the same decision)
                sentences, tokens = (share.sentences, share.tokens) if share is not None else (batch.num_sentences, batch.num_tokens)
                if rule.add(terms.loss * sentences, tokens):
                    return rule.steps
                index = int(torch.randint(len(batches), (1,), generator=generator))
                indices = batches[index]

    def validate(self, metrics: _MetricsLog, *, epoch_end: bool = False, stopped_by: str | None = None) -> dict[str, Any]:
        """The validation measures of ``train.validation`` (every measure of ``seqvae eval``, or
        the ELBO terms only), with z drawn from generators of their own."""
        config = self.config
        # Alone, a process may stop in the middle of a validation (under torchrun the ranks would
        # leave their collectives at different points): nothing of the trainer changes before the
        # figures are in, and the generators go back to where they stood, so the checkpoint saved
        # at the signal holds the state of the step before the validation.
        generators = (torch.get_rng_state(), torch.cuda.get_rng_state_all() if self.device.type == "cuda" else None)
        self.validating = not self.world.launched
        try:
            if self.world.parallel and self._shared_validation():
                valid, warnings = self._measure_validation(shared=True)
            else:
                valid, warnings = self.world.broadcast(self._measure_validation() if self.world.main else None)
        except _ValidationInterrupted:
            torch.set_rng_state(generators[0])
            if generators[1] is not None:
                torch.cuda.set_rng_state_all(generators[1])
            raise
        finally:
            self.validating = False
        self.valid = valid
        self.valid_step = self.step
        for warning in warnings:
            self.say(f"WARNING (epoch {self.epoch + 1}): {warning}")
        record = {"split": "valid", "step": self.step, "epoch": self.epoch + 1}
        if stopped_by:  # a validation where a budget stopped the run, not at an epoch's end
            record["stopped_by"] = stopped_by
        if config.train.aggressive:
            if epoch_end and self.switch.on and not self.switch.after_epoch(self.valid["mi"]):
                self.say(
                    f"aggressive training off for good after epoch {self.epoch + 1}: validation MI "
                    f"{self.valid['mi']:.3f} did not rise"
                )
            record["aggressive"] = self.switch.on
        metrics.write({**record, **{key: _round(value) for key, value in self.valid.items()}, "warnings": warnings})
        return self.valid

    def validate_or_stop(self, metrics: _MetricsLog, last_path: Path, **kwargs) -> dict[str, Any]:
        """:meth:`validate`; stopped by a signal, save the step it validates and stop (its resumed
        run validates that step again)."""
        try:
            return self.validate(metrics, **kwargs)
        except _ValidationInterrupted:
            self.stop_if_signalled(last_path, during="validation")
            raise  # not reached: stop_if_signalled raises once a signal is pending

    def _shared_validation(self) -> bool:
        """Whether the ranks share the validation batches (a Gaussian posterior or a language
        model); with a flow posterior rank 0 measures the whole set."""
        return self.model.is_language_model or self.model.posterior.flow is None

    def _measure_validation(self, *, shared: bool = False) -> tuple[dict[str, Any], list[str]]:
        """The validation figures and warnings, those of one process either way. Under torchrun
        the ranks share the validation batches (seqvae.evaluation), or with a flow posterior
        rank 0 measures the whole set while the others wait, then sends the figures."""
        config = self.config
        batches = self.data.batches("valid", config.train.eval_batch_size)
        target = free_bits_target(config.objective, self.model.latent_dim)
        if config.train.validation == "full":
            valid = evaluate_split(
                self.model,
                list(batches),
                self.data.tokenizer,
                iw_samples=config.train.validation_iw_samples,
                prior_samples=config.train.validation_prior_samples,
                free_bits_target=target,
                seed=config.run.seed * 7_919 + self.epoch + 1,
                words=self.data.splits["valid"].words,
                progress=self.progress,
                world=self.world if shared else None,
            )
            warnings = valid.pop("warnings")
        else:
            valid = evaluate_elbo(
                self.model,
                list(batches),
                generator=_validation_generator(config.run.seed, self.epoch),
                progress=self.progress,
                world=self.world if shared else None,
            )
            warnings = [] if self.model.is_language_model else diagnose(
                kl=valid["kl"],
                active=valid["active_units"],
                mean_posterior_std=valid["mean_posterior_std"],
                free_bits_target=target,
            )
        return valid, warnings


def train(
    config: Config,
    *,
    resume: bool = False,
    overwrite: bool = False,
    progress: bool = True,
    echo: Callable[[str], None] | None = None,
) -> TrainResult:
    """Train the VAE the config describes into ``config.run.dir``; see the module docstring.

    One training at a time writes a run directory (seqvae.locks). SIGINT and SIGTERM (when called
    from the main thread) save a resumable checkpoint at the current step and raise
    :class:`~seqvae.errors.TrainingInterrupted`; a second signal interrupts at once.

    Started by torchrun, each process is one rank of a data-parallel training (seqvae.distributed):
    rank 0 alone locks and writes the run directory and prints."""
    device = resolve_device(config.run.device)
    if config.train.precision == "fp16" and device.type != "cuda":
        raise SeqVAEError(
            "train.precision=fp16: fp16 with loss scaling is for CUDA; on the CPU use fp32 or bf16 (benchmarks/README.md)"
        )
    check_cuda_graphs(config, device, launched=launched())
    world, device = join(config.run.distributed_backend, device)
    if world.parallel and config.train.batch_size < world.size:
        raise SeqVAEError(
            f"train.batch_size={config.train.batch_size}: the global batch must have at least one sentence per process "
            f"({world.size} processes)"
        )
    resume, overwrite = world.broadcast((resume, overwrite))  # rank 0's view of the run directory decides
    with contextlib.ExitStack() as held:
        with agreement(world):
            if world.main:
                held.enter_context(run_directory_lock(config.run.dir))
        if not world.main:
            progress, echo = False, None
        return _train(config, resume=resume, overwrite=overwrite, progress=progress, echo=echo, world=world, device=device)


class _ValidationInterrupted(Exception):
    """Raised by the signal handler inside a validation, which the resumed run does again."""


@contextlib.contextmanager
def _stop_on_signals(trainer: _Trainer):
    """SIGINT / SIGTERM set ``trainer.signal`` (the loop saves and stops after the current step)
    and restore the previous handlers, so that a second signal acts at once. In a validation of
    one process the signal stops it at once: the run saves the step it had reached and its
    resumed run validates again.

    Under torchrun a rank keeps its handler: Ctrl-C reaches it from the terminal and again from
    torchrun, which passes the signal on to its workers (and kills them 30 s later if they have
    not stopped), and the second must not cut the save short."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    signals = (signal.SIGINT, signal.SIGTERM)
    previous = {number: signal.getsignal(number) for number in signals}

    def handler(number, frame):
        if trainer.signal is None:
            trainer.signal = signal.Signals(number).name
        if not trainer.world.launched:
            for other, action in previous.items():
                signal.signal(other, action)
        if trainer.validating:  # a validation may run for minutes: stop it now (see validate)
            trainer.validating = False
            raise _ValidationInterrupted

    for number in signals:
        signal.signal(number, handler)
    try:
        yield
    finally:
        for number, action in previous.items():
            signal.signal(number, action)


def _train(config: Config, *, resume: bool, overwrite: bool, progress: bool, echo, world: World, device: torch.device) -> TrainResult:
    started = time.perf_counter()
    say = echo or (lambda message: None)
    run_dir = Path(config.run.dir)
    saved_threads = None
    with agreement(world):
        if world.main:
            _check_run_dir(config, run_dir, resume=resume, overwrite=overwrite)
            saved_threads = load_config(run_dir / CONFIG_FILE).run.threads if resume else 0
    # threads: as asked, else as the run was started with, else the free CPUs; the saved config records them
    threads = config.run.threads or world.broadcast(saved_threads)
    config = dataclasses.replace(config, run=dataclasses.replace(config.run, threads=use_threads(threads)))

    corpus = load_corpus(config.data)
    tokenizer_files = None
    with agreement(world):  # rank 0 builds (or loads) the tokenizer and sends it to the others
        if world.main:
            tokenizer = load_tokenizer(run_dir) if resume else build_tokenizer(config.tokenizer, corpus.splits["train"])
            tokenizer_files = tokenizer.files() if world.parallel else None
    if world.parallel:
        tokenizer_files = world.broadcast(tokenizer_files)
        if not world.main:
            tokenizer = tokenizer_from_files(tokenizer_files, run_dir)
    data = prepare_data(config, corpus, tokenizer)
    if not resume and tokenizer.kind == "word":
        punctuated = punctuated_words(tokenizer)
        words = tokenizer.vocab_size - len(SPECIALS)
        if punctuated and len(punctuated) >= PUNCTUATED_SHARE * words:
            examples = ", ".join(repr(word) for word in punctuated[:3])
            say(
                f"tokenizer: {len(punctuated)} of the {words} words carry punctuation ({examples}): the word tokenizer "
                "splits on spaces only; tokenize the text first, or use tokenizer.kind=sentencepiece"
            )
    for split, counts in data.summary.items():
        if counts["truncated"] or counts["dropped"] or counts["blank_lines_skipped"]:
            say(
                f"{split}: {counts['blank_lines_skipped']} blank lines skipped, "
                f"{counts['truncated']} truncated, {counts['dropped']} dropped "
                f"(at {max_tokens(config)} tokens: data.max_length={config.data.max_length}, "
                f"model limit {model_length_limit(config.model) or 'none'}; data.length_policy={config.data.length_policy})"
            )
        if not max_tokens(config) and counts["longest_tokens"] > LONG_SENTENCE:
            say(
                f"{split}: the longest sentence has {counts['longest_tokens']} tokens (a line may hold a whole "
                "document); data.max_length with data.length_policy truncates or drops long lines"
            )

    trainer = _Trainer(config, data, device, say, progress=progress, world=world)
    last_path = run_dir / CHECKPOINT_DIR / LAST
    if resume:
        trainer.restore(last_path)
        say(f"resumed {run_dir} at step {trainer.step} (epoch {trainer.epoch + 1}, batch {trainer.batch_in_epoch})")
    else:
        with agreement(world):
            if config.train.init_from and world.main:  # checked before the run directory is replaced
                trainer.warm_start()  # the other ranks receive the weights in distribute()
        if world.main:
            _create_run_dir(run_dir)
            tokenizer.save(run_dir)
    trainer.distribute()
    if world.parallel:
        say(f"data-parallel training: {world.size} processes ({world.backend}), {config.train.batch_size} sentences per global batch")
    resumed_from = trainer.step if resume else None
    if world.main:
        # A resumed run may extend epochs or max_steps: the saved config records what now applies.
        atomic_write_text(run_dir / CONFIG_FILE, config_to_toml(config))
        atomic_write_json(run_dir / DATA_FILE, data.summary)
        metrics = _MetricsLog(run_dir / METRICS_FILE, _read_metrics(run_dir / METRICS_FILE, trainer.step))
    else:
        metrics = _NoMetrics()

    with _stop_on_signals(trainer):
        decay_limit = config.train.stop_after_decays
        if decay_limit and trainer.decays >= decay_limit:
            say(f"{run_dir}: already stopped after {trainer.decays} learning-rate decays (train.stop_after_decays={decay_limit})")
        while trainer.epoch < config.train.epochs and not (decay_limit and trainer.decays >= decay_limit):
            if not trainer.run_epoch(metrics, last_path):
                # a budget (train.max_minutes or train.max_steps) ends the run: validate what it reached
                if trainer.out_of_time():
                    key, limit = "train.max_minutes", f"{config.train.max_minutes:g}"
                    spent = f", {trainer.seconds() / 60:.1f} min"
                else:
                    key, limit, spent = "train.max_steps", str(config.train.max_steps), ""
                valid = trainer.valid if trainer.valid_step == trainer.step else trainer.validate_or_stop(metrics, last_path, stopped_by=key)
                trainer.keep_if_best(valid, run_dir / CHECKPOINT_DIR / BEST)
                trainer.save(last_path)
                say(f"stopped at {key}={limit} (step {trainer.step}{spent}): valid {_summary(valid)}; continue with --resume and a larger {key}")
                break
            valid = trainer.validate_or_stop(metrics, last_path, epoch_end=True)
            say(f"epoch {trainer.epoch + 1}: valid {_summary(valid)}")
            trainer.epoch, trainer.batch_in_epoch = trainer.epoch + 1, 0
            trainer.keep_if_best(valid, run_dir / CHECKPOINT_DIR / BEST)
            finished = trainer.plateau_step(valid, run_dir / CHECKPOINT_DIR / BEST)
            trainer.save(last_path)
            trainer.stop_if_signalled(last_path)
            if finished:
                say(f"stopped after {trainer.decays} learning-rate decays (train.stop_after_decays), epoch {trainer.epoch}")
                break
    return TrainResult(
        run_dir=run_dir,
        step=trainer.step,
        epoch=trainer.epoch,
        valid=trainer.valid,
        best_valid=trainer.best,
        data=data.summary,
        resumed_from_step=resumed_from,
        seconds=time.perf_counter() - started,
        finished=trainer.epoch >= config.train.epochs or bool(decay_limit and trainer.decays >= decay_limit),
        train_seconds=trainer.seconds(),
    )


def load_parts(model: SeqVAE, run_dir: str | Path, parts: tuple[str, ...], tokenizer) -> int:
    """Copy the named parts (``encoder``, ``posterior``, ``decoder``: every parameter and buffer
    under that module) from the best checkpoint of another run into ``model``, leaving the rest as
    they are; returns the number of tensors copied. The two runs' vocabularies must be the same
    and each copied part must have the same shapes in both models, else a one-line error."""
    run_dir = Path(run_dir)
    what = f"train.init_from={run_dir}"
    path = run_dir / CHECKPOINT_DIR / BEST
    if not run_dir.is_dir():
        raise SeqVAEError(f"{what}: run directory not found")
    if not path.is_file():
        raise SeqVAEError(f"{what}: no {CHECKPOINT_DIR}/{BEST} to start from (the run has not finished an epoch)")
    payload = load_checkpoint(path)
    check_vocabulary(path, payload, tokenizer)
    # a weight-dropped LSTM keeps weight_hh_lK as parametrizations.weight_hh_lK.original: the same
    # tensor under another name, so a part copies between runs with and without model.weight_drop
    source = {_plain_key(key): value for key, value in payload["model"].items()}
    own = model.state_dict()
    names = {_plain_key(key): key for key in own}
    state = {plain: own[key] for plain, key in names.items()}
    copied = 0
    for part in parts:
        prefix = f"{part}."
        wanted = {key for key in state if key.startswith(prefix)}
        given = {key for key in source if key.startswith(prefix)}
        if not wanted or not given:
            owner = "this model" if not wanted else "that run"
            raise SeqVAEError(f"{what}: {owner} has no {part} (a language model has only a decoder)")
        if wanted != given:
            differing = sorted(wanted ^ given)[0]
            raise SeqVAEError(f"{what}: the {part} differs from this run's ({differing} is in one model only); use the same [model] settings for it")
        for key in sorted(wanted):
            if source[key].shape != state[key].shape:
                raise SeqVAEError(
                    f"{what}: {key} has shape {tuple(source[key].shape)} there and {tuple(state[key].shape)} here; "
                    f"use the same [model] sizes for the {part}"
                )
            state[key] = source[key]
            copied += 1
    model.load_state_dict({names[key]: value for key, value in state.items()})
    return copied


def _plain_key(key: str) -> str:
    """A state-dict key without torch's parametrisation wrapping: ``a.parametrizations.w.original``
    -> ``a.w`` (seqvae.models.decoders.DropConnect); any other key as it is."""
    head, found, tail = key.partition(".parametrizations.")
    if found and tail.endswith(".original") and "." not in tail.removesuffix(".original"):
        return f"{head}.{tail.removesuffix('.original')}"
    return key


def _summary(valid: dict[str, Any]) -> str:
    """One line of the validation figures that are there (a language model has no z measures)."""
    shown = [("rec", ".3f"), ("kl", ".3f"), ("elbo", ".3f"), ("ppl_elbo", ".2f"), ("nll", ".3f"), ("ppl", ".2f"),
             ("mi", ".2f"), ("active_units", "d"), ("bleu", ".1f")]
    names = {"active_units": "au"}
    return " ".join(f"{names.get(key, key)} {valid[key]:{spec}}" for key, spec in shown if valid.get(key) is not None)


def load_run_config(run_dir: str | Path) -> Config:
    """The resolved config saved in a run directory."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise SeqVAEError(f"{run_dir}: run directory not found")
    return load_config(run_dir / CONFIG_FILE)


@dataclass(frozen=True)
class CheckpointInfo:
    """Which checkpoint a loaded model came from."""

    path: Path
    step: int
    epoch: int
    asked: str  # ``best`` or ``last``, as requested

    @property
    def fallback(self) -> bool:
        """best.pt was asked for and the run has none (it stopped before its first validation)."""
        return self.asked == "best" and self.path.name != BEST

    def __str__(self) -> str:
        where = f"{self.path} (step {self.step}, {self.epoch} epochs finished)"
        return f"{where}: the run has no {BEST} yet" if self.fallback else where


def load_checkpointed_model(
    run_dir: str | Path, *, checkpoint: str = "best", device: torch.device | str = "cpu"
) -> tuple[SeqVAE, Any, Config, CheckpointInfo]:
    """Rebuild the model of a run from its config, tokenizer and a checkpoint (``best``, falling
    back to ``last`` when the run has no best yet, or ``last``), and say which checkpoint it was."""
    run_dir = Path(run_dir)
    config = load_run_config(run_dir)
    tokenizer = load_tokenizer(run_dir)
    name = {"best": BEST, "last": LAST}.get(checkpoint)
    if name is None:
        raise SeqVAEError(f"checkpoint '{checkpoint}': choose best or last")
    path = run_dir / CHECKPOINT_DIR / name
    if checkpoint == "best" and not path.is_file() and (run_dir / CHECKPOINT_DIR / LAST).is_file():
        path = run_dir / CHECKPOINT_DIR / LAST  # stopped before its first validation
    payload = load_checkpoint(path, map_location=device)
    check_vocabulary(path, payload, tokenizer)
    model = build_model(
        config.model, vocab_size=tokenizer.vocab_size, pad_id=tokenizer.pad_id, unk_id=tokenizer.unk_id
    )
    load_model_state(path, model, payload["model"])
    model.to(device).eval()
    return model, tokenizer, config, CheckpointInfo(path=path, step=payload["step"], epoch=payload["epoch"], asked=checkpoint)


def load_trained_model(
    run_dir: str | Path, *, checkpoint: str = "best", device: torch.device | str = "cpu"
) -> tuple[SeqVAE, Any, Config]:
    """Rebuild the model of a run from its config, tokenizer and a checkpoint (``best`` or ``last``)."""
    model, tokenizer, config, _ = load_checkpointed_model(run_dir, checkpoint=checkpoint, device=device)
    return model, tokenizer, config


__all__ = [
    "CheckpointInfo",
    "TrainResult",
    "load_checkpointed_model",
    "load_parts",
    "load_run_config",
    "load_trained_model",
    "prepare_data",
    "resolve_device",
    "train",
    "train_step",
]

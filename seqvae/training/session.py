"""One call of :func:`train`: the checks, the data and the trainer of a sitting around the loop,
and what it leaves behind."""

from __future__ import annotations

import contextlib
import dataclasses
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch

from seqvae.config import Config, load_config
from seqvae.cuda_graphs import check_cuda_graphs
from seqvae.data.corpus import load_corpus
from seqvae.data.preparation import PreparedData, note_data, prepare_data
from seqvae.data.tokenizers import build_tokenizer, load_tokenizer, tokenizer_from_files
from seqvae.devices import resolve_device
from seqvae.distributed import World, agreement, join, launched
from seqvae.errors import SeqVAEError
from seqvae.files import StorageError
from seqvae.locks import run_directory_lock
from seqvae.run_directory import CONFIG_FILE, METRICS_FILE
from seqvae.threads import use_threads
from seqvae.training.loop import run_loop
from seqvae.training.memory import check_memory
from seqvae.training.metrics import MetricsLog, read_metrics
from seqvae.training.run_files import check_run_dir, create_run_dir, save_run_settings
from seqvae.training.stopping import stop_on_signals
from seqvae.training.trainer import Trainer


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


def train(
    config: Config,
    *,
    resume: bool = False,
    overwrite: bool = False,
    progress: bool = True,
    echo: Callable[[str], None] | None = None,
    pause_at_step: int | None = None,
) -> TrainResult:
    """Train the VAE the config describes into ``config.run.dir`` (seqvae.run_directory).

    ``pause_at_step``: end this sitting once the run has taken that many steps, with a resumable
    checkpoint and no other effect (the schedule is the config's; no validation), so that a caller
    can measure the run and continue it with ``resume=True`` (recipes/text/run.py resizes a stage
    that way); a run already past it pauses at once.

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
    if config.run.tensorboard:
        from seqvae.training.watching import require_tensorboard

        require_tensorboard()
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
        try:
            return _sitting(config, resume=resume, overwrite=overwrite, progress=progress, echo=echo, world=world, device=device,
                           pause_at_step=pause_at_step)
        except RuntimeError as error:
            if world.parallel and _lost_a_peer(error):
                raise SeqVAEError(
                    f"{config.run.dir}: rank {world.rank} lost another process of the training "
                    f"({str(error).splitlines()[0][-120:].strip()}); rerun the same torchrun command with --resume "
                    "to continue from the last checkpoint"
                ) from None
            raise


def _lost_a_peer(error: RuntimeError) -> bool:
    """A collective that failed because another rank died (gloo or NCCL report it as a RuntimeError:
    a connection reset or closed by the peer)."""
    text = str(error)
    backend_error = getattr(torch.distributed, "DistBackendError", ())
    return isinstance(error, backend_error) or any(mark in text for mark in ("Connection reset", "Connection closed", "gloo", "NCCL"))


def _sitting(config: Config, *, resume: bool, overwrite: bool, progress: bool, echo, world: World, device: torch.device,
             pause_at_step: int | None = None) -> TrainResult:
    """Check the run directory, prepare the data, start (or restore) the trainer, run the loop."""
    started = time.perf_counter()
    say = echo or (lambda message: None)
    config = _with_threads(config, resume=resume, overwrite=overwrite, world=world)
    data = _prepare(config, resume=resume, world=world, say=say, device=device)
    config = _with_precision(config, data, world=world, say=say, device=device)
    trainer = Trainer(config, data, device, say, progress=progress, world=world)
    trainer.pause_at_step = pause_at_step
    _start(trainer, resume=resume)
    resumed_from = trainer.state.step if resume else None
    try:
        with stop_on_signals(trainer.stops):
            run_loop(trainer)
    except StorageError as error:  # disk full or read-only: the last checkpoint written is whole
        raise StorageError(f"{error}; training stopped at step {trainer.state.step}: make room, then continue with "
                           "--resume from the last checkpoint") from None
    finally:
        if trainer.watch is not None:
            trainer.watch.close()
    state = trainer.state
    finished = state.epoch >= config.train.epochs or trainer.plateau.done()
    if finished and config.prior.fit and config.model.latent_dim > 0 and world.main:
        _fit_prior(trainer.run_dir, device, say)
    return TrainResult(
        run_dir=trainer.run_dir,
        step=state.step,
        epoch=state.epoch,
        valid=state.valid,
        best_valid=state.best,
        data=data.summary,
        resumed_from_step=resumed_from,
        seconds=time.perf_counter() - started,
        finished=finished,
        train_seconds=state.seconds(),
    )


def _with_threads(config: Config, *, resume: bool, overwrite: bool, world: World) -> Config:
    """Refuse what would lose work (rank 0), then set the threads: as asked, else as the run was
    started with, else the free CPUs; the saved config records them. A resumed run given
    ``train.precision = "auto"`` keeps the precision it started with."""
    run_dir = Path(config.run.dir)
    saved_threads = saved_precision = None
    with agreement(world):
        if world.main:
            saved = load_config(run_dir / CONFIG_FILE) if resume and (run_dir / CONFIG_FILE).is_file() else None
            if saved is not None and config.train.precision == "auto":
                # the choice the run started with (an older run's config may hold auto itself)
                saved_precision = saved.train.precision
                config = dataclasses.replace(config, train=dataclasses.replace(config.train, precision=saved_precision))
            check_run_dir(config, run_dir, resume=resume, overwrite=overwrite)  # a resume without config.toml stops here
            saved_threads = saved.run.threads if resume else 0
    threads = config.run.threads or world.broadcast(saved_threads)
    precision = world.broadcast(saved_precision) or config.train.precision
    return dataclasses.replace(config, run=dataclasses.replace(config.run, threads=use_threads(threads)),
                               train=dataclasses.replace(config.train, precision=precision))


def _with_precision(config: Config, data: PreparedData, *, world: World, say, device: torch.device) -> Config:
    """``train.precision = "auto"`` decided on rank 0 (seqvae.precision: the device, the CPU's
    flags and a timed probe of this model's step), said with its reason and sent to the other
    ranks; the saved config records the choice."""
    if config.train.precision != "auto":
        return config
    from seqvae.precision import choose_precision

    choice = None
    with agreement(world):
        if world.main:
            lengths = sorted(len(sequence) for sequence in data.splits["train"].sequences)
            typical = lengths[len(lengths) // 2] if lengths else 1
            choice, reason = choose_precision(device, config, data.tokenizer.vocab_size, length=typical)
            say(f"train.precision auto: {choice} ({reason})")
    choice = world.broadcast(choice)
    return dataclasses.replace(config, train=dataclasses.replace(config.train, precision=choice))


def _fit_prior(run_dir: Path, device: torch.device, say) -> None:
    """The ex-post prior of the finished run (seqvae.fitted_prior), fitted to its best
    checkpoint's codes (prior.fit)."""
    from seqvae.fitted_prior import PRIOR_FILE
    from seqvae.runs import load_run

    started = time.perf_counter()
    mixture = load_run(run_dir, device=str(device)).fit_prior()
    say(
        f"fitted prior: {mixture.components} x {mixture.covariance} Gaussian mixture on the training codes "
        f"(validation codes: {mixture.fit['valid_log_likelihood']:.3f} "
        f"nats against {mixture.fit['standard_normal_valid_log_likelihood']:.3f} under N(0, I); "
        f"{time.perf_counter() - started:.1f} s) -> {run_dir / PRIOR_FILE}"
    )


def _prepare(config: Config, *, resume: bool, world: World, say, device: torch.device) -> PreparedData:
    """The corpus under the run's tokenizer: rank 0 builds it (or loads the run's) and sends it to
    the others."""
    run_dir = Path(config.run.dir)
    corpus = load_corpus(config.data)
    tokenizer_files = None
    with agreement(world):
        if world.main:
            if resume or config.tokenizer.from_run:
                tokenizer = load_tokenizer(run_dir if resume else config.tokenizer.from_run)
            else:
                tokenizer = build_tokenizer(config.tokenizer, corpus.splits["train"])
            tokenizer_files = tokenizer.files() if world.parallel else None
    if world.parallel:
        tokenizer_files = world.broadcast(tokenizer_files)
        if not world.main:
            tokenizer = tokenizer_from_files(tokenizer_files, run_dir)
    data = prepare_data(config, corpus, tokenizer)
    note_data(config, data, new_tokenizer=not resume and not config.tokenizer.from_run, say=say)
    with agreement(world):  # before any model or batch is allocated
        if world.main:
            longest = {split: counts["longest_tokens"] for split, counts in data.summary.items()}
            check_memory(config, tokenizer.vocab_size, longest, device)
    return data


def _start(trainer: Trainer, *, resume: bool) -> None:
    """Restore the last checkpoint, or start afresh (the parts' fresh start, then a new run
    directory); then start the parts and write the run's settings and metrics log (rank 0)."""
    world, run_dir, config, say = trainer.world, trainer.run_dir, trainer.config, trainer.say
    if resume:
        trainer.restore()
        state = trainer.state
        say(f"resumed {run_dir} at step {state.step} (epoch {state.epoch + 1}, batch {state.batch_in_epoch})")
    else:
        with agreement(world):
            if world.main:  # checked before the run directory is replaced
                for part in trainer.parts:
                    part.fresh_start(trainer)
        if world.main:
            create_run_dir(run_dir)
            trainer.tokenizer.save(run_dir)
    for part in trainer.parts:
        part.start(trainer)
    if world.parallel:
        say(f"data-parallel training: {world.size} processes ({world.backend}), {config.train.batch_size} sentences per global batch")
    if world.main:
        save_run_settings(run_dir, config, trainer.data.summary)
        trainer.metrics = MetricsLog(run_dir / METRICS_FILE, read_metrics(run_dir / METRICS_FILE, trainer.state.step))
        if config.run.tensorboard:
            from seqvae.training.watching import TensorBoardLog

            trainer.watch = TensorBoardLog(trainer, resumed_at=trainer.state.step if resume else None)

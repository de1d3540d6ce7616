"""Data-parallel training across processes started by ``torchrun``.

``torchrun --nproc_per_node N -m seqvae train CONFIG`` starts N processes (ranks) with the
environment variables RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR and MASTER_PORT; each rank builds
the same model, the same global batches and the same noise, trains on its share of every batch,
and DistributedDataParallel (Li et al. 2020, "PyTorch Distributed") averages the gradients.

How a step is shared (:func:`shard_rows`): ``train.batch_size`` is the global batch. The length-
bucketed batches of an epoch are built on every rank from (seed, epoch) exactly as a single
process builds them, and rank r takes rows r, r + W, r + 2W, ... of each (the rows of a batch are
sorted by length, so every rank gets the same spread of lengths and waits least for the others).
Each rank's loss is weighted by n_r W / n (n_r of its rows, n in the batch), so the gradient DDP
averages is the gradient of the global batch mean, whatever the split. A rank with no row of a
small batch (n < W) runs one stand-in row at weight 0.

The noise of a step, z = mu + sigma * eps and the word-dropout draws, comes from a generator that
every rank holds in the same state and draws for the whole global batch, each rank keeping its
rows (:class:`StepNoise`). Batches, noise and the free-bits batch means (reduced across ranks)
are then those of one process with the whole batch, so the number of ranks changes a run only by
the order of floating-point sums and by dropout inside the networks (``model.dropout``, drawn per
rank). A run without torchrun draws its noise inside the model as it always has.
"""

from __future__ import annotations

import atexit
import contextlib
import datetime
import io
import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist

from seqvae.errors import ReportedByRankZero, SeqVAEError

@dataclass(frozen=True)
class World:
    """This process's place among the ranks of a training. ``launched``: started by torchrun (or
    with its environment variables), even as one process; the shared-noise path is then used."""

    rank: int = 0
    size: int = 1
    local_rank: int = 0
    backend: str = ""
    launched: bool = False

    @property
    def main(self) -> bool:
        """Rank 0: the one process that writes the run directory and prints."""
        return self.rank == 0

    @property
    def parallel(self) -> bool:
        return self.size > 1

    def sum(self, tensor: torch.Tensor) -> torch.Tensor:
        """The element-wise sum of ``tensor`` over the ranks (in place; the same on every rank)."""
        if self.parallel:
            dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
        return tensor

    def broadcast(self, value: Any) -> Any:
        """Rank 0's ``value`` on every rank (any picklable object)."""
        if not self.parallel:
            return value
        holder = [value if self.main else None]
        dist.broadcast_object_list(holder, src=0, device=self._object_device())
        return holder[0]

    def gather(self, value: Any) -> list[Any]:
        """Every rank's ``value``, in rank order, on every rank."""
        if not self.parallel:
            return [value]
        values: list[Any] = [None] * self.size
        dist.all_gather_object(values, value)
        return values

    def barrier(self) -> None:
        if self.parallel:
            dist.barrier()

    def _object_device(self) -> torch.device | None:
        return torch.device("cuda", torch.cuda.current_device()) if self.backend == "nccl" else None


SINGLE = World()
"""One process, not launched by torchrun: training as it has always run."""


def launched() -> bool:
    """Whether this process was started by torchrun (or with its environment variables)."""
    return "WORLD_SIZE" in os.environ and "RANK" in os.environ


def process_rank() -> int:
    """This process's rank as torchrun gave it (0 without torchrun), read before any process
    group exists: the commands print only on rank 0."""
    return _environment_int("RANK", default=0)


def process_count() -> int:
    """The number of processes torchrun started (1 without torchrun)."""
    return _environment_int("WORLD_SIZE", default=1)


def _environment_int(name: str, default: int | None = None) -> int:
    value = os.environ.get(name)
    if value is None:
        if default is None:
            raise SeqVAEError(f"environment variable {name}: not set (torchrun sets RANK, WORLD_SIZE and LOCAL_RANK)")
        return default
    try:
        return int(value)
    except ValueError:
        raise SeqVAEError(f"environment variable {name}={value!r}: not an integer") from None


def join(backend: str, device: torch.device) -> tuple[World, torch.device]:
    """The world of this process and the device it trains on. Under torchrun: the process group
    is initialised (``backend``: auto, gloo or nccl) and CUDA ranks take device LOCAL_RANK;
    otherwise :data:`SINGLE` and ``device`` unchanged. (The config checks ``backend``.)"""
    if not launched():
        return SINGLE, device
    rank, size = _environment_int("RANK"), _environment_int("WORLD_SIZE")
    local_rank = _environment_int("LOCAL_RANK", default=rank)
    if not 0 <= rank < size:
        raise SeqVAEError(f"environment variables RANK={rank}, WORLD_SIZE={size}: the rank must be in [0, WORLD_SIZE)")
    chosen = backend if backend != "auto" else ("nccl" if device.type == "cuda" else "gloo")
    if chosen == "nccl" and device.type != "cuda":
        raise SeqVAEError("run.distributed_backend=nccl: nccl needs CUDA devices; use gloo (or auto) on the CPU")
    if device.type == "cuda":
        if local_rank >= torch.cuda.device_count():
            raise SeqVAEError(
                f"LOCAL_RANK={local_rank}: this machine has {torch.cuda.device_count()} CUDA devices; "
                "start at most that many processes per node (--nproc_per_node)"
            )
        device = torch.device("cuda", local_rank)
        torch.cuda.set_device(device)
    if size > 1 and not dist.is_initialized():  # once per process: a recipe's later stages reuse it
        options = {"device_id": device} if chosen == "nccl" else {}
        dist.init_process_group(chosen, rank=rank, world_size=size, timeout=datetime.timedelta(minutes=30), **options)
        atexit.register(_leave)
    return World(rank=rank, size=size, local_rank=local_rank, backend=chosen if size > 1 else "", launched=True), device


def _leave() -> None:
    """Tear the process group down when the process exits (after an error too: no barrier)."""
    if dist.is_initialized():
        dist.destroy_process_group()


def leave() -> None:
    """End this process's part in the process group once its command has finished on every rank:
    a barrier first, so that no rank tears its connections down while another is still inside the
    group, then the group destroyed. Without it the ranks tear the group down at interpreter exit,
    each when it gets there; one such exit aborted a rank in CI ("terminate called without an
    active exception"). A no-op without a process group."""
    if dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()


def shard_rows(count: int, world: World) -> list[int]:
    """The rows of a global batch of ``count`` sentences that this rank trains on:
    rank, rank + W, rank + 2W, ... (empty when count <= rank)."""
    return list(range(world.rank, count, world.size))


@dataclass
class StepNoise:
    """The noise of one rank's rows of a step, drawn for the global batch: ``eps`` (n_r, Z) for
    z = mu + sigma * eps, and ``word_dropout`` (n_r, T_r) uniforms compared with the rate (None
    when word dropout is off)."""

    eps: torch.Tensor | None
    word_dropout: torch.Tensor | None

    @staticmethod
    def draw(
        generator: torch.Generator,
        *,
        sentences: int,
        width: int,
        latent_dim: int,
        rows: list[int],
        row_width: int,
        word_dropout: bool,
        device: torch.device,
    ) -> StepNoise:
        """Draw (sentences, latent_dim) normals, then (sentences, width) uniforms when word dropout
        is on, from ``generator`` (on the CPU, so every device draws the same numbers), and keep
        ``rows`` (the first ``row_width`` positions of the uniforms: the rows' own width)."""
        index = torch.tensor(rows, dtype=torch.long)
        eps = torch.randn((sentences, latent_dim), generator=generator) if latent_dim else None
        uniforms = torch.rand((sentences, width), generator=generator) if word_dropout else None
        return StepNoise(
            eps=eps.index_select(0, index).to(device) if eps is not None else None,
            word_dropout=uniforms.index_select(0, index)[:, :row_width].contiguous().to(device) if uniforms is not None else None,
        )


def to_bytes(payload: dict) -> bytes:
    """A checkpoint payload as bytes (torch.save), to broadcast it from rank 0."""
    buffer = io.BytesIO()
    torch.save(payload, buffer)
    return buffer.getvalue()


def from_bytes(data: bytes, device: torch.device) -> dict:
    return torch.load(io.BytesIO(data), map_location=device, weights_only=True)


__all__ = ["SINGLE", "StepNoise", "World", "join", "launched", "process_count", "process_rank", "shard_rows"]


@dataclass
class RankShare:
    """One rank's part of a global batch under torchrun (seqvae.distributed): what
    :func:`seqvae.training.step.train_step` needs beside the rows themselves.

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

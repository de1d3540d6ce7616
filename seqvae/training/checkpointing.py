"""Checkpoints of a training and exact resume: the model, optimizer, scheduler and gradient-scaler
states, the position in the epoch, the partial metric window, what the chosen parts keep (the
rate multiplier, the aggressive switch), and every generator of every rank.

Exact resume: batch order is a pure function of (seed, epoch) and the KL weight of the step, so a
run resumed from these states computes the same updates and metrics as an uninterrupted one.
Under torchrun rank 0 writes the file, with every rank's generators gathered into it, and reads
it for the others (the run directory need not be on a filesystem every node sees).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from seqvae.checkpoints import check_vocabulary, load_checkpoint, load_model_state, missing_entry, save_checkpoint
from seqvae.config import config_to_dict
from seqvae.distributed import World, agreement, from_bytes, to_bytes
from seqvae.errors import SeqVAEError
from seqvae.run_directory import CONFIG_FILE, LAST
from seqvae.training.metrics import MetricWindow
from seqvae.training.run_files import check_resumable_dicts

PART_ENTRIES = {"rate_constraint": {}, "aggressive": {}}
"""Entries of the checkpoint format that parts fill (seqvae.training.parts); empty when the part
is not chosen, as 0.1.0 wrote them."""


def noise_seed(seed: int, step: int) -> int:
    """The seed of the generator of the z and word-dropout noise under torchrun (at ``step`` when
    a run without torchrun continues under it)."""
    return seed * 104_729 + 1 + step


def rank_seed(seed: int, rank: int, step: int) -> int:
    """The seed of rank r's own default generator (dropout) under torchrun; rank 0 keeps the
    run's seed."""
    return seed * 1_299_709 + 7_919 * rank + step


def read_checkpoint(world: World, path: Path) -> dict[str, Any]:
    """A checkpoint's payload on every rank: read by rank 0 and sent to the others; an error stops
    every rank.

    The payload stays on the CPU whatever the run's device: the RNG states must be CPU byte
    tensors (torch.set_rng_state refuses a CUDA one), and load_state_dict copies weights and
    optimizer moments to the parameters' device itself."""
    if not world.parallel:
        return load_checkpoint(path, map_location="cpu")
    data = None
    with agreement(world):
        if world.main:
            data = to_bytes(load_checkpoint(path, map_location="cpu"))
    return from_bytes(world.broadcast(data), torch.device("cpu"))


def save(trainer, path: Path) -> None:
    """Write a checkpoint atomically; weights that are not finite are never written."""
    state, world, device = trainer.model.state_dict(), trainer.world, trainer.device
    if not all(bool(torch.isfinite(tensor).all()) for tensor in state.values() if tensor.is_floating_point()):
        raise SeqVAEError(f"{path}: not written, the model's weights are not finite (training diverged)")
    if path.name == LAST:
        trainer.state.saved_step = trainer.state.step
    ranks = {}
    if world.launched:  # every rank's generators, gathered to rank 0 (a collective: all ranks save)
        ranks["rng_ranks"] = world.gather(torch.get_rng_state())
        if device.type == "cuda":
            ranks["rng_cuda_ranks"] = world.gather(torch.cuda.get_rng_state(device).cpu())
        ranks.update(noise_rng=trainer.noise_generator.get_state(), world_size=world.size)
    if not world.main:
        return
    parts = dict(PART_ENTRIES)
    for part in trainer.parts:
        part.save(parts)
    position = trainer.state
    scaler = trainer.precision.scaler
    save_checkpoint(
        path,
        {
            "model": state,
            "optimizer": trainer.optimizer.state_dict(),
            "lr_scheduler": trainer.scheduler.state_dict() if trainer.scheduler is not None else {},
            "step": position.step,
            "epoch": position.epoch,
            "batch_in_epoch": position.batch_in_epoch,
            "best_valid": position.best,
            # the last validation and its step: a run resumed at its budget has nothing to measure
            "last_valid": {"step": position.valid_step, "figures": position.valid},
            "lr_decays": trainer.plateau.decays,
            "train_seconds": position.seconds(),
            "window": position.window.sums,
            **parts,
            "rng_cpu": torch.get_rng_state(),
            "rng_cuda": torch.cuda.get_rng_state_all() if device.type == "cuda" and not world.launched else [],
            **ranks,
            "grad_scaler": scaler.state_dict() if scaler is not None else {},
            "config": config_to_dict(trainer.config),
            "vocab_fingerprint": trainer.tokenizer.fingerprint,
            "vocab_size": trainer.tokenizer.vocab_size,
        },
    )


def restore(trainer, path: Path) -> None:
    """Continue from a checkpoint: weights, optimizer, scheduler, position, parts and generators."""
    payload = read_checkpoint(trainer.world, path)
    try:
        _restore(trainer, path, payload)
    except KeyError as error:
        raise missing_entry(path, payload, error.args[0]) from None


CORPUS_PATHS = {("data", "train"), ("data", "valid"), ("data", "test")}
"""Besides RESUMABLE_CHANGES, what config.toml may say otherwise than the checkpoint: where the
corpus now lies (a corpus moved with its run; the tokenizer's fingerprint still has to match)."""


def _restore(trainer, path: Path, payload: dict[str, Any]) -> None:
    if "config" in payload:  # the config it was trained with: a config.toml edited since is checked too
        check_resumable_dicts(path, payload["config"], config_to_dict(trainer.config), trainer.run_dir / CONFIG_FILE,
                              also=CORPUS_PATHS)
    check_vocabulary(path, payload, trainer.tokenizer)
    load_model_state(path, trainer.model, payload["model"])
    trainer.optimizer.load_state_dict(payload["optimizer"])
    scaler = trainer.precision.scaler
    if scaler is not None and payload.get("grad_scaler"):
        scaler.load_state_dict(payload["grad_scaler"])
    if trainer.scheduler is not None and payload.get("lr_scheduler"):
        trainer.scheduler.load_state_dict(payload["lr_scheduler"])
    position = trainer.state
    position.step, position.epoch, position.batch_in_epoch = payload["step"], payload["epoch"], payload["batch_in_epoch"]
    position.saved_step = position.step
    position.best = payload["best_valid"]
    last_valid = payload.get("last_valid") or {}  # absent from checkpoints of earlier versions
    position.valid, position.valid_step = last_valid.get("figures"), last_valid.get("step")
    position.seconds_before = payload.get("train_seconds", 0.0)
    position.window = MetricWindow(payload["window"])
    trainer.plateau.decays = payload.get("lr_decays", 0)
    for part in trainer.parts:
        part.restore(payload)
    if trainer.world.launched:
        restore_rank_generators(trainer, payload)
        return
    if payload.get("world_size"):
        trainer.say(
            f"resumed without torchrun a run checkpointed by {payload['world_size']} torchrun processes: z and "
            "word-dropout noise are drawn inside the model from here on, so the run is not bit-exact with an "
            "uninterrupted one"
        )
    torch.set_rng_state(payload["rng_cpu"])
    if trainer.device.type == "cuda" and payload.get("rng_cuda"):
        torch.cuda.set_rng_state_all(payload["rng_cuda"])


def restore_rank_generators(trainer, payload: dict[str, Any]) -> None:
    """Under torchrun: the shared noise generator, and this rank's own generators when the
    checkpoint has this rank's (same world size: the run continues bit-exactly on the CPU);
    a rank the checkpoint did not have seeds them from (seed, rank, step)."""
    seed, world, step = trainer.config.run.seed, trainer.world, trainer.state.step
    if payload.get("noise_rng") is not None:
        trainer.noise_generator.set_state(payload["noise_rng"])
    else:  # a checkpoint of a run without torchrun
        trainer.noise_generator.manual_seed(noise_seed(seed, step))
    states = payload.get("rng_ranks") or ([payload["rng_cpu"]] if not payload.get("world_size") else [])
    if world.rank < len(states):
        torch.set_rng_state(states[world.rank])
    else:
        torch.manual_seed(rank_seed(seed, world.rank, step))
    cuda_states = payload.get("rng_cuda_ranks") or []
    if trainer.device.type == "cuda" and world.rank < len(cuda_states):
        torch.cuda.set_rng_state(cuda_states[world.rank], trainer.device)
    saved = payload.get("world_size", 1)
    if saved != world.size:
        trainer.say(
            f"resumed with {world.size} processes a run checkpointed with {saved}: batches, z and word-dropout "
            "noise continue as they were; model.dropout draws and the order of floating-point sums differ, "
            "so the run is not bit-exact with an uninterrupted one"
        )

"""Will the training fit in memory? Asked before the model or a batch is allocated, so that a
vocabulary or a line too large for the machine is a one-line error naming the key that fixes it,
not a process the system kills after minutes of swapping.

The estimate is deliberately coarse, and errs low so that it refuses only what cannot fit:

    bytes ~ 16 P  +  batch_size x T_train x a  +  eval_batch_size x T_valid x a / 3

with P the model's parameters (counted on the meta device, nothing allocated; a posterior flow's
few are left out), 16 bytes each for the weights, their gradients and Adam's two moments in fp32;
T the longest sentence of a split in
tokens (a length-bucketed batch is padded to it); and a = 4 (3 S + 16 H + 2 E) bytes of
activations per token position, S the output layer's scores per position (V for the full
softmax), H the hidden size (a Transformer's feed-forward size if larger) and E the embedding size. Validation keeps no gradients (a third)."""

from __future__ import annotations

import dataclasses
import os

import torch

from seqvae.config import Config
from seqvae.data.preparation import LONG_SENTENCE
from seqvae.errors import SeqVAEError

GIB = 2**30


def available_bytes(device: torch.device) -> int | None:
    """Free memory of ``device``: CUDA's free memory, or the system's MemAvailable (Linux); None
    where it cannot be read."""
    if device.type == "cuda":
        return torch.cuda.mem_get_info(device)[0]
    try:
        with open("/proc/meminfo", encoding="ascii") as handle:
            for line in handle:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None


def training_bytes(config: Config, vocab_size: int, longest: dict[str, int]) -> tuple[int, int, int]:
    """(total, the parameters' share, the largest batch's share) of the estimate above; ``longest``
    maps split names to their longest sentence in tokens."""
    from seqvae.models.vae import build_model

    with torch.device("meta"):  # a flow's initialisation reads its weights, which meta tensors lack: counted without it
        model = build_model(dataclasses.replace(config.model, flow="none"), vocab_size=vocab_size)
    parameters = sum(parameter.numel() for parameter in model.parameters())
    scores = model.decoder.output.scores_per_position
    sizes = config.model
    hidden = sizes.hidden_dim
    if "transformer" in (sizes.encoder, sizes.decoder):  # its feed-forward layer is the widest activation
        hidden = max(hidden, sizes.ff_dim)
    per_token = 4 * (3 * scores + 16 * hidden + 2 * sizes.embedding_dim)
    batches = config.train.batch_size * longest.get("train", 0) * per_token
    batches += config.train.eval_batch_size * max((length for split, length in longest.items() if split != "train"), default=0) * per_token // 3
    return 16 * parameters + batches, 16 * parameters, batches


def check_memory(config: Config, vocab_size: int, longest: dict[str, int], device: torch.device) -> None:
    """Refuse a training whose estimate exceeds the free memory of ``device``, naming what to change."""
    free = available_bytes(device)
    if free is None:
        return
    total = training_bytes(config, vocab_size, longest)[0]
    if total <= free:
        return
    need = f"training would need about {total / GIB:.1f} GiB, more than the {free / GIB:.1f} GiB free"
    split, length = max(longest.items(), key=lambda item: item[1])
    if length > LONG_SENTENCE:  # a line that holds a document, or no spaces: its length is the fix
        raise SeqVAEError(
            f"data.max_length: {need} (the longest {split} sentence has {length} tokens, and a batch is padded to it); "
            "set data.max_length (e.g. 200) with data.length_policy=truncate or drop"
        )
    raise SeqVAEError(
        f"tokenizer.max_size: {need} (a vocabulary of {vocab_size} tokens with model.output_layer="
        f"{config.model.output_layer}); lower tokenizer.max_size or raise tokenizer.min_frequency, "
        "or use model.output_layer=adaptive"
    )

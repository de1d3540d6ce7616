"""Which device a command runs on."""

from __future__ import annotations

import torch

from seqvae.errors import SeqVAEError


def resolve_device(name: str) -> torch.device:
    """``auto`` picks CUDA when it is available; ``cuda`` without a GPU is an error."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise SeqVAEError("run.device=cuda: CUDA is not available on this machine (use auto or cpu)")
    return torch.device(name)

"""Checkpoint files: state_dicts and plain values only, written atomically, loaded with
``weights_only=True``, and checked against the run's vocabulary before use."""

from __future__ import annotations

import pickle
import warnings
import zipfile
from pathlib import Path
from typing import Any

import torch

from seqvae.errors import SeqVAEError
from seqvae.files import atomic_write_with

FORMAT = "seqvae-checkpoint-1"


def save_checkpoint(path: str | Path, payload: dict[str, Any]) -> None:
    """Serialise straight into a temporary file, then rename it over ``path`` (no copy of the
    checkpoint in memory: with the optimizer state it is several times the model's size)."""
    from seqvae import __version__

    atomic_write_with(path, lambda handle: torch.save({"format": FORMAT, "seqvae_version": __version__, **payload}, handle))


def load_checkpoint(path: str | Path, *, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Load a checkpoint written by :func:`save_checkpoint`, or raise a one-line SeqVAEError."""
    path = Path(path)
    if not path.is_file():
        raise SeqVAEError(f"{path}: checkpoint not found")
    try:
        with warnings.catch_warnings():  # torch's own warnings would repeat what the error says
            warnings.simplefilter("ignore")
            payload = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as error:
        if "unsupported global" in str(error).lower():  # a pickled object, class or function: not data
            raise SeqVAEError(
                f"{path}: refused: it holds Python objects or code, which a seqvae checkpoint never does "
                "(only tensors and plain values are loaded)"
            ) from None
        raise SeqVAEError(f"{path}: truncated or corrupt checkpoint (it cannot be read)") from None
    except (RuntimeError, EOFError, zipfile.BadZipFile, ValueError, KeyError, OSError):
        raise SeqVAEError(f"{path}: truncated or corrupt checkpoint (it cannot be read)") from None
    if not isinstance(payload, dict) or not str(payload.get("format", "")).startswith("seqvae-checkpoint-"):
        raise SeqVAEError(f"{path}: not a seqvae checkpoint")
    if payload["format"] != FORMAT:
        raise SeqVAEError(f"{path}: {_written_by(payload)} in {payload['format']}; {_this_release()}")
    return payload


def _written_by(payload: dict[str, Any]) -> str:
    return f"written by seqvae {payload.get('seqvae_version', 'before 0.1.0')}"


def _this_release() -> str:
    from seqvae import __version__

    return f"this seqvae {__version__} reads {FORMAT}"


def missing_entry(path: str | Path, payload: dict[str, Any], key: str) -> SeqVAEError:
    """The error for a checkpoint that lacks an entry this release needs (a KeyError otherwise)."""
    return SeqVAEError(f"{path}: the checkpoint has no {key!r} entry ({_written_by(payload)}; {_this_release()})")


def check_vocabulary(path: str | Path, payload: dict[str, Any], tokenizer) -> None:
    """Refuse a checkpoint trained with another vocabulary than ``tokenizer``."""
    if payload.get("vocab_fingerprint") != tokenizer.fingerprint or payload.get("vocab_size") != tokenizer.vocab_size:
        raise SeqVAEError(
            f"{path}: checkpoint was trained with another vocabulary "
            f"({payload.get('vocab_size')} tokens, fingerprint {payload.get('vocab_fingerprint')}) "
            f"than the run's tokenizer ({tokenizer.vocab_size} tokens, fingerprint {tokenizer.fingerprint})"
        )


def load_model_state(path: str | Path, model: torch.nn.Module, state: dict[str, torch.Tensor]) -> None:
    """load_state_dict, with a mismatch reported as a one-line error naming the checkpoint."""
    try:
        model.load_state_dict(state)
    except RuntimeError as error:
        first = str(error).strip().splitlines()[0]
        raise SeqVAEError(f"{path}: checkpoint does not fit the configured model: {first}") from None

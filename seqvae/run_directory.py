"""A run directory, as ``seqvae train`` writes it and every other command reads it.

- ``config.toml``: the resolved configuration (``seqvae train RUN/config.toml`` repeats the run)
- ``tokenizer.json`` (and ``tokenizer.model`` for SentencePiece)
- ``data.json``: sentence, token, blank-line, truncation and drop counts per split
- ``metrics.jsonl``: one JSON record per logged training window and per validation pass
- ``checkpoints/last.pt`` and ``checkpoints/best.pt`` (best validation ELBO, or reconstruction
  with ``train.best_metric = "rec"``)

The training package (seqvae.training) writes them; this module rebuilds a trained model from
them for the commands and for :class:`seqvae.runs.Run`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from seqvae.checkpoints import check_vocabulary, load_checkpoint, load_model_state
from seqvae.config import Config, load_config
from seqvae.data.tokenizers import load_tokenizer
from seqvae.errors import SeqVAEError
from seqvae.models.vae import SeqVAE, build_model

CONFIG_FILE = "config.toml"
DATA_FILE = "data.json"
METRICS_FILE = "metrics.jsonl"
CHECKPOINT_DIR = "checkpoints"
LAST = "last.pt"
BEST = "best.pt"


def read_metric_records(path: str | Path) -> list[tuple[str, dict[str, Any]]]:
    """(line, record) for each record of a ``metrics.jsonl``, in order. A last line cut short (no
    newline, not JSON: the process died, or the disk filled, while appending it) is left out, as
    if never written; any other line that is not a record is a one-line SeqVAEError naming it."""
    path = Path(path)
    lines = path.read_text(encoding="utf-8").split("\n")
    records = []
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
            if not isinstance(record, dict) or not isinstance(record.get("split"), str) or not isinstance(record.get("step"), int):
                raise ValueError
        except ValueError:
            if number == len(lines):  # torn: the file does not end with a newline after it
                break
            raise SeqVAEError(f"{path}:{number}: not a metrics record") from None
        records.append((line, record))
    return records


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
        return self.asked == "best" and self.path.name == LAST

    def __str__(self) -> str:
        where = f"{self.path} (step {self.step}, {self.epoch} epochs finished)"
        return f"{where}: the run has no {BEST} yet" if self.fallback else where


def load_checkpointed_model(
    run_dir: str | Path, *, checkpoint: str = "best", device: torch.device | str = "cpu"
) -> tuple[SeqVAE, Any, Config, CheckpointInfo]:
    """Rebuild the model of a run from its config, tokenizer and a checkpoint (``best``, falling
    back to ``last`` when the run has no best yet, or ``last``), and say which checkpoint it was."""
    run_dir = Path(run_dir)
    from seqvae.export import is_exported, load_exported

    if is_exported(run_dir):  # a folder of `seqvae export`: its one set of weights, from safetensors
        return load_exported(run_dir, device=device)
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

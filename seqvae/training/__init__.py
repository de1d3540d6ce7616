"""Training: :func:`train` runs a config into a run directory (seqvae.run_directory), with
checkpoints, exact resume, budgets, signals and torchrun.

One file per responsibility, in the order a step meets them:

- ``session``: :func:`train` itself, the setup of a sitting (checks, threads, data, tokenizer,
  the trainer, a fresh or resumed start) around the loop, and :class:`TrainResult`;
- ``loop``: the training algorithm in one function, :func:`~seqvae.training.loop.run_loop`;
- ``trainer``: the state of a run and the operations the loop is written in;
- ``step``: one update (forward, objective, backward, precision, clipping, the non-finite check,
  CUDA graphs): :func:`train_step`;
- ``optimization``: the optimizer and the learning-rate rules (plateau; warm-up, stable, decay);
- ``validation``: validation during training and the figure that picks best.pt;
- ``checkpointing``: checkpoints and exact resume, every generator of every rank;
- ``stopping``: budgets and signals;
- ``metrics``: the metrics log and its windows;
- ``run_files``: the checks before a run directory is written, and its settings files;
- ``parts``: the methods that change the loop, one file each (aggressive training, the minimum
  desired rate, the warm start, CUDA graphs, the data-parallel share, the step-wise learning
  rate), chosen in one place;
- ``probe``: the measured cost of a step and of the final evaluation, before a run is planned
  (seqvae.planning, recipes/text/run.py).

Data preparation lives in seqvae.data.preparation, loading a trained model in
seqvae.run_directory, the rank share of a batch in seqvae.distributed; they are importable from
here as well, where earlier releases had them.
"""

from seqvae.data.preparation import PreparedData, max_tokens, prepare_data
from seqvae.devices import resolve_device
from seqvae.run_directory import CheckpointInfo, load_checkpointed_model, load_run_config, load_trained_model
from seqvae.training.optimization import build_optimizer
from seqvae.training.parts.warm_start import load_parts
from seqvae.training.session import TrainResult, train
from seqvae.training.step import NonFiniteStep, Precision, graphed_step, train_step

__all__ = [
    "CheckpointInfo",
    "NonFiniteStep",
    "Precision",
    "PreparedData",
    "TrainResult",
    "build_optimizer",
    "graphed_step",
    "load_checkpointed_model",
    "load_parts",
    "load_run_config",
    "load_trained_model",
    "max_tokens",
    "prepare_data",
    "resolve_device",
    "train",
    "train_step",
]

"""seqvae: sequence variational autoencoders for text.

The data flow is the layout: ``seqvae.data`` (corpora, tokenizers, batches) ->
``seqvae.models`` (encoder, posterior, decoder) -> ``seqvae.losses`` and ``seqvae.annealing`` ->
``seqvae.training`` (a package: the loop in one function, each method that changes it a part) ->
``seqvae.measures`` and ``seqvae.evaluation`` -> ``seqvae.generation``; ``seqvae.run_directory``
reads what training wrote, ``seqvae.runs`` wraps a trained run for use from Python
(``seqvae.attributes`` adds attribute vectors, ``seqvae.report`` the run report), and
``seqvae.cli`` is the ``seqvae`` command over all of it.
"""

from seqvae.config import Config, config_to_toml, load_config, load_layered_config
from seqvae.data.synthetic import write_corpus
from seqvae.errors import SeqVAEError
from seqvae.generation import Decoding
from seqvae.runs import Generated, Run, load_run
from seqvae.training import TrainResult, train

__version__ = "0.1.0"
"""The release, written here only: pyproject.toml reads it, checkpoints record it, ``seqvae --version`` prints it."""

__all__ = [
    "Config",
    "Decoding",
    "Generated",
    "Run",
    "SeqVAEError",
    "TrainResult",
    "config_to_toml",
    "load_config",
    "load_layered_config",
    "load_run",
    "train",
    "write_corpus",
]

"""Parameter initialisation schemes a model may be built with (``model.init``).

- ``pytorch``: each module's own default (``nn.Embedding`` N(0, 1); ``nn.LSTM`` and ``nn.Linear``
  U(-1/sqrt(fan), 1/sqrt(fan)); flows and batch norm as their modules set them).
- ``uniform``: the scheme of the He et al. 2019 / Li et al. 2019 LSTM VAE code on which the PTB
  table was measured: every embedding U(-0.1, 0.1) (the padding row stays zero), every weight and
  bias of the LSTMs and linear maps (the output layer's included) U(-0.01, 0.01). Normalisation
  layers and flow steps keep their own initialisation (a flow's gate bias and a batch-norm scale
  are part of their method's definition). With a tied output layer (``model.tie_embeddings``)
  the shared matrix takes the embedding's range, which keeps the initial logits small.
"""

from __future__ import annotations

import torch
from torch import nn

from seqvae.models.flows import InverseAutoregressiveFlow, PlanarFlow

INITS = ("pytorch", "uniform")

EMBEDDING_RANGE = 0.1
WEIGHT_RANGE = 0.01


@torch.no_grad()
def initialise(model: nn.Module, scheme: str) -> None:
    """Re-initialise ``model`` in place by ``scheme`` (one of :data:`INITS`)."""
    if scheme not in INITS:
        raise ValueError(f"unknown init '{scheme}'; choices: {', '.join(INITS)}")
    if scheme == "pytorch":
        return
    skipped = set()
    for module in model.modules():
        if _keeps_own_init(module):
            skipped.update(id(parameter) for parameter in module.parameters())
    embeddings = set()
    for module in model.modules():
        if isinstance(module, nn.Embedding):
            embeddings.add(id(module.weight))
            module.weight.uniform_(-EMBEDDING_RANGE, EMBEDDING_RANGE)
            if module.padding_idx is not None:
                module.weight[module.padding_idx].zero_()
    for parameter in model.parameters():  # shared (tied) parameters appear once
        if id(parameter) in embeddings or id(parameter) in skipped:
            continue
        parameter.uniform_(-WEIGHT_RANGE, WEIGHT_RANGE)


def _keeps_own_init(module: nn.Module) -> bool:
    """Normalisation layers and flows, whose initial values belong to their definition."""
    return isinstance(module, (nn.LayerNorm, nn.modules.batchnorm._BatchNorm, InverseAutoregressiveFlow, PlanarFlow))

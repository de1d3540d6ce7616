"""Autoregressive decoders p(x|z) and the ways z enters them.

Injection modes (any combination):

- ``initial_state``: z sets the LSTM's initial state through a linear map (c_0 = W z + b,
  h_0 = tanh(c_0)) for every layer, as in Bowman et al. 2016, "Generating Sentences from a
  Continuous Space".
- ``concat``: z is concatenated to the input embedding at every step, as in the LSTM decoders of
  Yang et al. 2017 and He et al. 2019, so z cannot be forgotten along the sentence.

The same ``forward`` serves training (all positions at once) and incremental decoding (one
position per call with the returned state), so the cached path and the full pass are one code
path. Shapes: B sentences, T positions, E embedding, H hidden, Z latent, V vocabulary.
"""

from __future__ import annotations

import torch
from torch import nn

INJECTIONS = ("initial_state", "concat")

LSTMState = tuple[torch.Tensor, torch.Tensor]


class LSTMDecoder(nn.Module):
    """An LSTM language model conditioned on z."""

    def __init__(
        self,
        *,
        vocab_size: int,
        embedding_dim: int,
        hidden_dim: int,
        latent_dim: int,
        num_layers: int = 1,
        injection: tuple[str, ...] = ("initial_state", "concat"),
        tie_embeddings: bool = False,
        dropout: float = 0.0,
        pad_id: int = 0,
    ) -> None:
        super().__init__()
        unknown = [name for name in injection if name not in INJECTIONS]
        if unknown or not injection:
            raise ValueError(f"unknown injection {unknown or injection}; choices: {', '.join(INJECTIONS)}")
        self.injection = tuple(injection)
        self.num_layers = num_layers
        self.hidden_dim = hidden_dim
        self.embedding = nn.Embedding(vocab_size, embedding_dim, padding_idx=pad_id)
        self.dropout = nn.Dropout(dropout)
        input_dim = embedding_dim + (latent_dim if "concat" in self.injection else 0)
        self.lstm = nn.LSTM(
            input_dim, hidden_dim, num_layers=num_layers, batch_first=True, dropout=dropout if num_layers > 1 else 0.0
        )
        if "initial_state" in self.injection:
            self.latent_to_state = nn.Linear(latent_dim, num_layers * hidden_dim)
        if tie_embeddings:
            # The output layer reuses the embedding matrix; a projection bridges H to E.
            self.bridge = nn.Linear(hidden_dim, embedding_dim) if hidden_dim != embedding_dim else nn.Identity()
            self.output = nn.Linear(embedding_dim, vocab_size)
            self.output.weight = self.embedding.weight
        else:
            self.bridge = nn.Identity()
            self.output = nn.Linear(hidden_dim, vocab_size)

    def initial_state(self, z: torch.Tensor) -> LSTMState:
        """The state before the first token: from z, or zeros. Each is (layers, B, H)."""
        batch = z.shape[0]
        if "initial_state" in self.injection:
            cell = self.latent_to_state(z).view(batch, self.num_layers, self.hidden_dim).transpose(0, 1).contiguous()
            return torch.tanh(cell), cell
        zeros = z.new_zeros(self.num_layers, batch, self.hidden_dim)
        return zeros, zeros

    def forward(
        self, inputs: torch.Tensor, z: torch.Tensor, state: LSTMState | None = None
    ) -> tuple[torch.Tensor, LSTMState]:
        """inputs (B, T) token ids, z (B, Z) -> logits (B, T, V) and the state after position T.

        Pass the returned state back with the next input tokens to continue a sequence.
        """
        if state is None:
            state = self.initial_state(z)
        embedded = self.dropout(self.embedding(inputs))  # (B, T, E)
        if "concat" in self.injection:
            embedded = torch.cat([embedded, z.unsqueeze(1).expand(-1, inputs.shape[1], -1)], dim=-1)
        hidden, state = self.lstm(embedded, state)  # (B, T, H)
        logits = self.output(self.bridge(self.dropout(hidden)))  # (B, T, V)
        return logits, state


DECODERS = {"lstm": LSTMDecoder}

"""Autoregressive decoders p(x|z) (LSTM, Transformer) and the ways z enters them.

Injection modes, named the same across decoders (a decoder takes any combination of its own):

- ``initial_state`` (LSTM): z sets the initial state through a linear map (c_0 = W z + b,
  h_0 = tanh(c_0)) for every layer, as in Bowman et al. 2016, "Generating Sentences from a
  Continuous Space".
- ``concat`` (LSTM): z is concatenated to the input embedding at every step, as in the LSTM
  decoders of Yang et al. 2017 and He et al. 2019, so z cannot be forgotten along the sentence.
- ``add`` (LSTM, Transformer): a linear map of z is added to every input embedding, the
  "embedding" injection of Optimus (Li et al. 2020) and of Fang et al. 2021's Transformer VAE.
- ``memory`` (Transformer): z, mapped to one vector, is a memory that every block attends to by
  cross-attention, as the encoder output in an encoder-decoder Transformer (Vaswani et al. 2017;
  the "memory" variant of Optimus).
- ``prefix`` (Transformer): z, mapped to one vector, is a position before <bos> that every token
  attends to through causal self-attention, as in prefix-conditioned language models (Li & Liang
  2021) and the latent-as-first-token Transformer VAEs.

The same ``forward`` serves training (all positions at once) and incremental decoding (one
position per call with the returned state: the LSTM state, or the cached attention keys and
values), so the cached path and the full pass are one code path. A decoder returns features
(hidden states, after dropout and the tied bridge); its output layer ``decoder.output``
(seqvae.models.output_layer: full softmax or adaptive softmax) turns them into a target-only loss
(``decoder.sequence_nll``) or the full next-token distribution (``decoder.log_probs``), so no
caller branches on the kind of output layer. With ``latent_dim = 0`` a decoder has no injection
at all (its injection setting is unused): it is a plain language model that ignores its (B, 0) z.
Shapes: B sentences, T positions, E embedding,
H hidden, F features (H, or E when tied), Z latent, V vocabulary.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

import torch
from torch import nn
from torch.nn.utils import parametrize

from seqvae.models.attention import KeyValue, Positions, TransformerBlock
from seqvae.models.output_layer import build_output_layer

INJECTIONS = {"lstm": ("initial_state", "concat", "add"), "transformer": ("add", "memory", "prefix")}
"""The injection modes each decoder accepts."""

LSTMState = tuple[torch.Tensor, torch.Tensor]


def _bridge(hidden_dim: int, embedding_dim: int, tie: bool) -> nn.Module:
    """What sits between the hidden states and the output layer: tied (Press & Wolf 2017), a linear
    map from H to E when they differ, so the output layer can share the E-dimensional embedding."""
    return nn.Linear(hidden_dim, embedding_dim) if tie and hidden_dim != embedding_dim else nn.Identity()


class Decoder(nn.Module):
    """What both decoders share: ``forward(inputs, z, state)`` returns the features (B, T, F) the
    output layer ``self.output`` reads, and the two ways callers use them."""

    output: nn.Module
    longest_output: int | None = None
    """The most tokens one decoding can produce (None: no limit; a Transformer with learned
    positions has max_positions positions, less its prefix). Decoding stops there."""

    def _output_layer(self, hidden_dim: int, tie: bool, output_layer: str, cutoffs, div_value: float) -> None:
        """The bridge and ``self.output`` (seqvae.models.output_layer), after ``self.embedding``."""
        vocab_size, embedding_dim = self.embedding.weight.shape
        self.bridge = _bridge(hidden_dim, embedding_dim, tie)
        self.output = build_output_layer(
            output_layer,
            in_features=embedding_dim if tie else hidden_dim,
            vocab_size=vocab_size,
            embedding=self.embedding,
            tie=tie,
            cutoffs=tuple(cutoffs),
            div_value=div_value,
        )

    def log_probs(self, inputs: torch.Tensor, z: torch.Tensor, state=None):
        """inputs (B, T), z (B, Z) -> log p(. | x_<t, z) over the whole vocabulary (B, T, V), and
        the state after position T (pass it back with the next tokens to continue)."""
        features, state = self(inputs, z, state)
        return self.output.log_prob(features), state

    def sequence_nll(self, inputs: torch.Tensor, z: torch.Tensor, targets: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """-log p(x|z) per sentence (B,), summed over the real targets (mask True), computing only
        what the targets need (the whole softmax, or the adaptive head and the targets' clusters)."""
        features, _ = self(inputs, z)
        return self.output.sequence_nll(features, targets, mask)


class DropConnect(nn.Module):
    """A parametrisation that drops each weight with probability p in training and rescales the
    rest by 1 / (1 - p) (Wan et al. 2013); the identity in evaluation."""

    def __init__(self, p: float) -> None:
        super().__init__()
        self.p = p

    def forward(self, weight: torch.Tensor) -> torch.Tensor:
        return nn.functional.dropout(weight, self.p, self.training)

    def extra_repr(self) -> str:
        return f"p={self.p}"


class LSTMDecoder(Decoder):
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
        output_layer: str = "softmax",
        adaptive_cutoffs: tuple[int, ...] = (2000, 6000),
        adaptive_div_value: float = 4.0,
        dropout: float = 0.0,
        weight_drop: float = 0.0,
        pad_id: int = 0,
    ) -> None:
        super().__init__()
        _check_injection("lstm", injection)
        self.injection = tuple(injection) if latent_dim > 0 else ()
        self.num_layers = num_layers
        self.hidden_dim = hidden_dim
        self.embedding = nn.Embedding(vocab_size, embedding_dim, padding_idx=pad_id)
        self.dropout = nn.Dropout(dropout)
        input_dim = embedding_dim + (latent_dim if "concat" in self.injection else 0)
        self.lstm = nn.LSTM(
            input_dim, hidden_dim, num_layers=num_layers, batch_first=True, dropout=dropout if num_layers > 1 else 0.0
        )
        self.weight_drop = weight_drop
        if weight_drop:  # its parameters become lstm.parametrizations.weight_hh_lK.original
            for layer in range(num_layers):
                parametrize.register_parametrization(self.lstm, f"weight_hh_l{layer}", DropConnect(weight_drop))
        if "initial_state" in self.injection:
            self.latent_to_state = nn.Linear(latent_dim, num_layers * hidden_dim)
        if "add" in self.injection:
            self.latent_to_embedding = nn.Linear(latent_dim, embedding_dim)
        self._output_layer(hidden_dim, tie_embeddings, output_layer, adaptive_cutoffs, adaptive_div_value)

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
        """inputs (B, T) token ids, z (B, Z) -> features (B, T, F) for ``self.output`` and the
        state after position T. Pass the returned state back with the next input tokens to continue
        a sequence."""
        if state is None:
            state = self.initial_state(z)
        embedded = self.embedding(inputs)  # (B, T, E)
        if "add" in self.injection:
            embedded = embedded + self.latent_to_embedding(z).unsqueeze(1)
        embedded = self.dropout(embedded)
        if "concat" in self.injection:
            embedded = torch.cat([embedded, z.unsqueeze(1).expand(-1, inputs.shape[1], -1)], dim=-1)
        # weight drop: one mask per call (nn.LSTM reads each weight several times, and uncached
        # each read would draw a new mask)
        with parametrize.cached() if self.weight_drop else contextlib.nullcontext():
            hidden, state = self.lstm(embedded, state)  # (B, T, H)
        return self.bridge(self.dropout(hidden)), state  # (B, T, F)

    @staticmethod
    def reorder_state(state: LSTMState, index: torch.Tensor) -> LSTMState:
        """The state of sentences ``index`` (beam search keeps, and repeats, some of them)."""
        return tuple(part.index_select(1, index) for part in state)


def _check_injection(decoder: str, injection: tuple[str, ...]) -> None:
    unknown = [name for name in injection if name not in INJECTIONS[decoder]]
    if unknown or not injection:
        raise ValueError(
            f"injection {', '.join(unknown or injection) or '(none)'} does not apply to the {decoder} decoder; "
            f"choices: {', '.join(INJECTIONS[decoder])}"
        )


@dataclass
class TransformerState:
    """What incremental decoding carries: each block's keys and values, and positions consumed."""

    caches: list[KeyValue]
    length: int


class TransformerDecoder(Decoder):
    """A causal pre-LN Transformer language model conditioned on z."""

    def __init__(
        self,
        *,
        vocab_size: int,
        embedding_dim: int,
        hidden_dim: int,
        latent_dim: int,
        num_layers: int = 2,
        num_heads: int = 4,
        ff_dim: int = 1024,
        injection: tuple[str, ...] = ("memory",),
        tie_embeddings: bool = False,
        output_layer: str = "softmax",
        adaptive_cutoffs: tuple[int, ...] = (2000, 6000),
        adaptive_div_value: float = 4.0,
        dropout: float = 0.0,
        positions: str = "learned",
        max_positions: int = 512,
        pad_id: int = 0,
    ) -> None:
        super().__init__()
        _check_injection("transformer", injection)
        self.injection = tuple(injection) if latent_dim > 0 else ()
        self.embedding = nn.Embedding(vocab_size, embedding_dim, padding_idx=pad_id)
        self.project = nn.Linear(embedding_dim, hidden_dim) if embedding_dim != hidden_dim else nn.Identity()
        self.positions = Positions(kind=positions, hidden_dim=hidden_dim, max_positions=max_positions)
        self.latent_to_embedding = nn.Linear(latent_dim, hidden_dim) if "add" in self.injection else None
        self.latent_to_memory = nn.Linear(latent_dim, hidden_dim) if "memory" in self.injection else None
        self.latent_to_prefix = nn.Linear(latent_dim, hidden_dim) if "prefix" in self.injection else None
        self.blocks = nn.ModuleList(
            TransformerBlock(
                hidden_dim=hidden_dim,
                num_heads=num_heads,
                ff_dim=ff_dim,
                dropout=dropout,
                cross_attention="memory" in self.injection,
            )
            for _ in range(num_layers)
        )
        self.norm = nn.LayerNorm(hidden_dim)
        self.dropout = nn.Dropout(dropout)
        self._output_layer(hidden_dim, tie_embeddings, output_layer, adaptive_cutoffs, adaptive_div_value)
        if positions == "learned":
            self.longest_output = max_positions - (1 if self.latent_to_prefix is not None else 0)

    def forward(
        self, inputs: torch.Tensor, z: torch.Tensor, state: TransformerState | None = None
    ) -> tuple[torch.Tensor, TransformerState]:
        """inputs (B, T) token ids, z (B, Z) -> features (B, T, F) for ``self.output`` and the
        state after position T."""
        x = self.project(self.embedding(inputs))  # (B, T, H)
        if self.latent_to_embedding is not None:
            x = x + self.latent_to_embedding(z).unsqueeze(1)
        with_prefix = state is None and self.latent_to_prefix is not None
        if with_prefix:  # the prefix is position 0, before <bos>; later calls find it in the cache
            x = torch.cat([self.latent_to_prefix(z).unsqueeze(1), x], dim=1)
        offset = 0 if state is None else state.length
        x = self.dropout(x + self.positions(x.shape[1], offset, x.device))
        memory = self.latent_to_memory(z).unsqueeze(1) if self.latent_to_memory is not None else None  # (B, 1, H)
        caches = state.caches if state is not None else [None] * len(self.blocks)
        new_caches = []
        for block, cache in zip(self.blocks, caches):
            x, cache = block(x, causal=True, cache=cache, memory=memory)
            new_caches.append(cache)
        length = offset + x.shape[1]
        hidden = self.norm(x[:, 1:] if with_prefix else x)
        features = self.bridge(self.dropout(hidden))  # (B, T, F)
        return features, TransformerState(caches=new_caches, length=length)

    @staticmethod
    def reorder_state(state: TransformerState, index: torch.Tensor) -> TransformerState:
        """The cache of sentences ``index`` (beam search keeps, and repeats, some of them)."""
        caches = [KeyValue(keys=c.keys.index_select(0, index), values=c.values.index_select(0, index)) for c in state.caches]
        return TransformerState(caches=caches, length=state.length)


DECODERS = {"lstm": LSTMDecoder, "transformer": TransformerDecoder}

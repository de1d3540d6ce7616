"""Sentence encoders (LSTM, Transformer): token ids -> one summary vector per sentence, which the
posterior reads.

Shapes: B sentences, T positions, E embedding, H hidden.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence

from seqvae.models.attention import Positions, TransformerBlock


class LSTMEncoder(nn.Module):
    """An LSTM over the sentence; the summary is the last layer's final hidden state (both
    directions concatenated when bidirectional), as in Bowman et al. 2016. A sentence's summary
    does not depend on its batch:

    - unidirectional, the LSTM runs over the padded batch and the summary is the top layer's
      output at each sentence's last real token, which no padding (always after it) can reach;
    - bidirectional, a batch whose sentences all have the same length (most length-bucketed
      batches) runs padded as well, any other runs on packed sequences, which skip the padding
      that the backward direction would otherwise read first.

    The padded LSTM is the same computation as the packed one, up to floating-point order, and
    much cheaper on a CPU: packed sequences cannot use the fused oneDNN kernel."""

    def __init__(
        self,
        *,
        vocab_size: int,
        embedding_dim: int,
        hidden_dim: int,
        num_layers: int = 1,
        bidirectional: bool = False,
        dropout: float = 0.0,
        pad_id: int = 0,
    ) -> None:
        super().__init__()
        self.embedding = nn.Embedding(vocab_size, embedding_dim, padding_idx=pad_id)
        self.dropout = nn.Dropout(dropout)
        self.lstm = nn.LSTM(
            embedding_dim,
            hidden_dim,
            num_layers=num_layers,
            bidirectional=bidirectional,
            batch_first=True,
            dropout=dropout if num_layers > 1 else 0.0,
        )
        self.output_dim = hidden_dim * (2 if bidirectional else 1)

    def forward(self, tokens: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """tokens (B, T), lengths (B,) -> summary (B, H or 2H)."""
        embedded = self.dropout(self.embedding(tokens))  # (B, T, E)
        if not self.lstm.bidirectional:
            outputs, _ = self.lstm(embedded)  # (B, T, H), position t reads tokens up to t only
            last = (lengths - 1).to(outputs.device).view(-1, 1, 1).expand(-1, 1, outputs.shape[-1])
            return outputs.gather(1, last).squeeze(1)  # (B, H)
        if bool((lengths == tokens.shape[1]).all()):
            _, (hidden, _) = self.lstm(embedded)  # no padding at all: the final states are exact
        else:
            packed = pack_padded_sequence(embedded, lengths.cpu(), batch_first=True, enforce_sorted=False)
            _, (hidden, _) = self.lstm(packed)  # hidden: (layers * directions, B, H)
        return torch.cat([hidden[-2], hidden[-1]], dim=-1)



class TransformerEncoder(nn.Module):
    """Pre-LN Transformer blocks over the sentence with a padding mask; the summary is the mean
    of the final states over real tokens (``pooling = "mean"``) or the final state of a learned
    summary token placed before the sentence (``pooling = "summary_token"``, as BERT's [CLS])."""

    def __init__(
        self,
        *,
        vocab_size: int,
        embedding_dim: int,
        hidden_dim: int,
        num_layers: int = 2,
        num_heads: int = 4,
        ff_dim: int = 1024,
        dropout: float = 0.0,
        positions: str = "learned",
        max_positions: int = 512,
        pooling: str = "mean",
        pad_id: int = 0,
    ) -> None:
        super().__init__()
        if pooling not in ("mean", "summary_token"):
            raise ValueError(f"unknown pooling '{pooling}'; choices: mean, summary_token")
        self.pooling = pooling
        self.embedding = nn.Embedding(vocab_size, embedding_dim, padding_idx=pad_id)
        self.project = nn.Linear(embedding_dim, hidden_dim) if embedding_dim != hidden_dim else nn.Identity()
        self.positions = Positions(kind=positions, hidden_dim=hidden_dim, max_positions=max_positions)
        self.summary_token = nn.Parameter(torch.zeros(1, 1, hidden_dim)) if pooling == "summary_token" else None
        self.blocks = nn.ModuleList(
            TransformerBlock(hidden_dim=hidden_dim, num_heads=num_heads, ff_dim=ff_dim, dropout=dropout)
            for _ in range(num_layers)
        )
        self.norm = nn.LayerNorm(hidden_dim)
        self.dropout = nn.Dropout(dropout)
        self.output_dim = hidden_dim

    def forward(self, tokens: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """tokens (B, T), lengths (B,) -> summary (B, H)."""
        batch, length = tokens.shape
        real = torch.arange(length, device=tokens.device).unsqueeze(0) < lengths.unsqueeze(1)  # (B, T)
        x = self.project(self.embedding(tokens))  # (B, T, H)
        if self.summary_token is not None:
            x = torch.cat([self.summary_token.expand(batch, -1, -1), x], dim=1)
            real = torch.cat([real.new_ones(batch, 1), real], dim=1)
        x = self.dropout(x + self.positions(x.shape[1], 0, x.device))
        for block in self.blocks:
            x, _ = block(x, key_padding=~real)
        x = self.norm(x)
        if self.summary_token is not None:
            return x[:, 0]
        weights = real.unsqueeze(-1).to(x.dtype)
        return (x * weights).sum(dim=1) / weights.sum(dim=1)


ENCODERS = {"lstm": LSTMEncoder, "transformer": TransformerEncoder}

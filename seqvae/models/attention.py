"""Pre-LayerNorm Transformer blocks with an attention cache, and position encodings.

Shared by the Transformer encoder (bidirectional, with a padding mask) and decoder (causal, with
cached keys and values for incremental decoding). Shapes: B sentences, T positions, H model
width, N heads, D = H / N per head.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn


@dataclass
class KeyValue:
    """Cached keys and values of one attention layer: (B, N, T, D) each."""

    keys: torch.Tensor
    values: torch.Tensor


class MultiHeadAttention(nn.Module):
    """Scaled dot-product attention (Vaswani et al. 2017) whose self-attention can extend a cache."""

    def __init__(self, *, hidden_dim: int, num_heads: int, dropout: float = 0.0) -> None:
        super().__init__()
        if hidden_dim % num_heads:
            raise ValueError(f"hidden_dim {hidden_dim} is not divisible by num_heads {num_heads}")
        self.num_heads = num_heads
        self.query = nn.Linear(hidden_dim, hidden_dim)
        self.key_value = nn.Linear(hidden_dim, 2 * hidden_dim)
        self.output = nn.Linear(hidden_dim, hidden_dim)
        self.dropout = dropout

    def _heads(self, x: torch.Tensor) -> torch.Tensor:
        batch, length, width = x.shape
        return x.view(batch, length, self.num_heads, width // self.num_heads).transpose(1, 2)  # (B, N, T, D)

    def forward(
        self,
        x: torch.Tensor,
        *,
        source: torch.Tensor | None = None,
        cache: KeyValue | None = None,
        causal: bool = False,
        key_padding: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, KeyValue]:
        """x (B, T, H) attends to ``source`` (B, S, H), or to itself after the cached positions.

        key_padding (B, S) is True at keys to ignore. With ``causal``, position t of x (at
        absolute position cached + t) sees keys up to itself only.
        """
        queries = self._heads(self.query(x))
        keys, values = self._heads_pair(source if source is not None else x)
        if cache is not None:
            keys = torch.cat([cache.keys, keys], dim=2)
            values = torch.cat([cache.values, values], dim=2)
        mask = None
        if causal and x.shape[1] > 1:
            total, new = keys.shape[2], x.shape[1]
            rows = torch.arange(total - new, total, device=x.device).unsqueeze(1)
            mask = torch.arange(total, device=x.device).unsqueeze(0) <= rows  # (T, S): True = may attend
        if key_padding is not None:
            visible = ~key_padding[:, None, None, :]  # (B, 1, 1, S)
            mask = visible if mask is None else mask & visible
        attended = F.scaled_dot_product_attention(
            queries, keys, values, attn_mask=mask, dropout_p=self.dropout if self.training else 0.0
        )  # (B, N, T, D)
        batch, _, length, _ = attended.shape
        merged = attended.transpose(1, 2).reshape(batch, length, -1)
        return self.output(merged), KeyValue(keys=keys, values=values)

    def _heads_pair(self, source: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        keys, values = self.key_value(source).chunk(2, dim=-1)
        return self._heads(keys), self._heads(values)


class TransformerBlock(nn.Module):
    """Pre-LN block (Xiong et al. 2020): x + SelfAttn(LN(x)) [+ CrossAttn(LN(x), memory)] + FF(LN(x))."""

    def __init__(
        self, *, hidden_dim: int, num_heads: int, ff_dim: int, dropout: float = 0.0, cross_attention: bool = False
    ) -> None:
        super().__init__()
        self.self_norm = nn.LayerNorm(hidden_dim)
        self.self_attention = MultiHeadAttention(hidden_dim=hidden_dim, num_heads=num_heads, dropout=dropout)
        self.cross_norm = nn.LayerNorm(hidden_dim) if cross_attention else None
        self.cross_attention = (
            MultiHeadAttention(hidden_dim=hidden_dim, num_heads=num_heads, dropout=dropout) if cross_attention else None
        )
        self.ff_norm = nn.LayerNorm(hidden_dim)
        self.feed_forward = nn.Sequential(
            nn.Linear(hidden_dim, ff_dim), nn.GELU(), nn.Dropout(dropout), nn.Linear(ff_dim, hidden_dim)
        )
        self.dropout = nn.Dropout(dropout)

    def forward(
        self,
        x: torch.Tensor,
        *,
        causal: bool = False,
        key_padding: torch.Tensor | None = None,
        cache: KeyValue | None = None,
        memory: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, KeyValue]:
        attended, cache = self.self_attention(self.self_norm(x), cache=cache, causal=causal, key_padding=key_padding)
        x = x + self.dropout(attended)
        if self.cross_attention is not None:
            crossed, _ = self.cross_attention(self.cross_norm(x), source=memory)
            x = x + self.dropout(crossed)
        x = x + self.dropout(self.feed_forward(self.ff_norm(x)))
        return x, cache


class Positions(nn.Module):
    """Position encodings added to embeddings: ``learned`` (a table of max_positions rows) or
    ``sinusoidal`` (Vaswani et al. 2017, section 3.5; no length limit)."""

    def __init__(self, *, kind: str, hidden_dim: int, max_positions: int) -> None:
        super().__init__()
        self.kind = kind
        if kind == "learned":
            self.table = nn.Embedding(max_positions, hidden_dim)
        elif kind == "sinusoidal":
            self.hidden_dim = hidden_dim
        else:
            raise ValueError(f"unknown positions '{kind}'; choices: learned, sinusoidal")

    def forward(self, length: int, offset: int, device: torch.device) -> torch.Tensor:
        """Encodings of positions offset ... offset + length - 1, (length, H)."""
        positions = torch.arange(offset, offset + length, device=device)
        if self.kind == "learned":
            if offset + length > self.table.num_embeddings:
                raise ValueError(
                    f"position {offset + length - 1} is beyond model.max_positions={self.table.num_embeddings}"
                )
            return self.table(positions)
        half = self.hidden_dim // 2
        frequencies = torch.exp(-math.log(10000.0) * torch.arange(half, device=device) / half)
        angles = positions.unsqueeze(1).float() * frequencies.unsqueeze(0)
        encoding = torch.cat([angles.sin(), angles.cos()], dim=1)
        if encoding.shape[1] < self.hidden_dim:  # odd width
            encoding = F.pad(encoding, (0, 1))
        return encoding

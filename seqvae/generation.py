"""Turning codes into sentences: incremental greedy decoding, prior samples, interpolation paths.

Decoding is batched over sentences and incremental: each step feeds one token per sentence with
the decoder's cached state, so T tokens cost T single-token steps.
"""

from __future__ import annotations

import torch

from seqvae.data.tokenizers import BOS_ID, EOS_ID


@torch.no_grad()
def greedy_decode(decoder, z: torch.Tensor, *, max_length: int = 50, min_length: int = 0) -> list[list[int]]:
    """The most probable token at each step for every code in z (B, Z); <eos> is barred before
    ``min_length`` tokens, and decoding stops when every sentence has ended or after
    ``max_length`` tokens. Returns each sentence's token ids without <bos>/<eos>.

    One decoder call per step on the new token only, with the cached state (LSTM state or
    attention keys and values): T tokens cost T single-token steps, batched over sentences.
    """
    batch = z.shape[0]
    token = torch.full((batch, 1), BOS_ID, dtype=torch.long, device=z.device)
    finished = torch.zeros(batch, dtype=torch.bool, device=z.device)
    state = None
    steps: list[torch.Tensor] = []
    for position in range(max_length):
        logits, state = decoder(token, z, state)  # (B, 1, V)
        scores = logits[:, -1]
        if position < min_length:
            scores = scores.clone()
            scores[:, EOS_ID] = float("-inf")
        token = scores.argmax(dim=-1, keepdim=True)  # (B, 1)
        steps.append(token.squeeze(1))
        finished |= token.squeeze(1) == EOS_ID
        if bool(finished.all()):
            break
    ids = torch.stack(steps, dim=1).tolist()  # (B, L)
    return [row[: row.index(EOS_ID)] if EOS_ID in row else row for row in ids]


def sample_prior(num_samples: int, latent_dim: int, *, generator: torch.Generator | None = None) -> torch.Tensor:
    """z ~ N(0, I), (N, Z)."""
    return torch.randn(num_samples, latent_dim, generator=generator)


def linear_path(start: torch.Tensor, end: torch.Tensor, steps: int) -> tuple[torch.Tensor, torch.Tensor]:
    """phi(t) = z0 + t (z1 - z0) at ``steps`` evenly spaced t in [0, 1], endpoints included
    (the notes, section 3.3; Bowman et al. 2016's homotopies). Returns t (K,) and codes (K, Z)."""
    if steps < 2:
        raise ValueError("an interpolation needs at least 2 steps (its two endpoints)")
    t = torch.linspace(0.0, 1.0, steps, dtype=start.dtype, device=start.device)
    return t, start.unsqueeze(0) + t.unsqueeze(1) * (end - start).unsqueeze(0)

"""Turning codes into sentences: decoding strategies, prior samples, interpolation paths.

Decoding is batched over sentences (and beams) and incremental: each step feeds one token per
sentence with the decoder's cached state, so T tokens cost T single-token steps. Strategies:
greedy, sampling (temperature, top-k, top-p) and beam search, chosen with :class:`Decoding`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from seqvae.data.tokenizers import BOS_ID, EOS_ID, PAD_ID, UNK_ID

STRATEGIES = ("greedy", "sample", "beam")


@dataclass(frozen=True)
class Decoding:
    """How codes become sentences.

    - ``strategy``: ``greedy`` (the most probable token at each step), ``sample`` (a token drawn
      from the softmax of logits / ``temperature``, restricted to the ``top_k`` most probable
      tokens (0: all) and to the smallest set whose probability reaches ``top_p``, nucleus
      sampling, Holtzman et al. 2020), or ``beam`` (beam search with ``beam_size`` beams per
      sentence; finished hypotheses ranked by log p / length ** ``length_penalty``, so 0 ranks by
      the total log p and 1 by its mean per token).
    - ``max_length``: tokens generated at most (<eos> included); ``min_length``: <eos> is barred
      before this many tokens.
    - ``forbid_unk``: <unk> is never produced (excluded from the choice at every step), for
      readable output from a model whose data has many unknown words; the reported log p(x|z) of
      a decode stays the model's own.
    """

    strategy: str = "greedy"
    temperature: float = 1.0
    top_k: int = 0
    top_p: float = 1.0
    beam_size: int = 5
    length_penalty: float = 0.0
    max_length: int = 50
    min_length: int = 0
    forbid_unk: bool = False

    def __post_init__(self) -> None:
        checks = {
            "strategy": self.strategy in STRATEGIES,
            "temperature": self.temperature > 0 and math.isfinite(self.temperature),
            "top_k": self.top_k >= 0,
            "top_p": 0.0 < self.top_p <= 1.0,
            "beam_size": self.beam_size >= 1,
            "length_penalty": self.length_penalty >= 0,
            "max_length": self.max_length >= 1,
            "min_length": 0 <= self.min_length < self.max_length,
        }
        for name, ok in checks.items():
            if not ok:
                allowed = {
                    "strategy": f"one of {', '.join(STRATEGIES)}",
                    "temperature": "a positive number",
                    "top_k": "0 (no limit) or more",
                    "top_p": "in (0, 1]",
                    "beam_size": "at least 1",
                    "length_penalty": "0 or more",
                    "max_length": "at least 1",
                    "min_length": "0 or more and less than max_length",
                }[name]
                raise ValueError(f"decoding {name} {getattr(self, name)!r}: must be {allowed}")


def decode(decoder, z: torch.Tensor, decoding: Decoding = Decoding(), *, generator: torch.Generator | None = None) -> list[list[int]]:
    """Token ids (without <bos>/<eos>) of a sentence for every code in z (B, Z), by ``decoding``.
    ``generator`` drives sampling (on z's device); greedy and beam search are deterministic."""
    lengths = {"max_length": decoding.max_length, "min_length": decoding.min_length, "forbid_unk": decoding.forbid_unk}
    if decoding.strategy == "greedy":
        return greedy_decode(decoder, z, **lengths)
    if decoding.strategy == "sample":
        return sample_decode(
            decoder, z, temperature=decoding.temperature, top_k=decoding.top_k, top_p=decoding.top_p,
            generator=generator, **lengths,
        )
    return beam_decode(decoder, z, beam_size=decoding.beam_size, length_penalty=decoding.length_penalty, **lengths)


def longest(decoder, max_length: int) -> int:
    """``max_length``, or fewer when the decoder cannot produce that many tokens (a Transformer's
    learned positions): decoding stops at the decoder's limit instead of failing there."""
    limit = getattr(decoder, "longest_output", None)
    return min(max_length, limit) if limit else max_length


def ended(decoder, ids: list[list[int]], max_length: int) -> list[bool]:
    """Whether each decode (ids without <eos>, from a decoding with ``max_length``) produced its
    <eos>: one that used every token the decoding allowed never did."""
    limit = longest(decoder, max_length)
    return [len(row) < limit for row in ids]


def cut_at_eos(ids: list[list[int]]) -> list[list[int]]:
    """Each row of token ids up to (without) its first <eos>; rows without one whole."""
    return [row[: row.index(EOS_ID)] if EOS_ID in row else row for row in ids]


@torch.no_grad()
def greedy_decode(
    decoder, z: torch.Tensor, *, max_length: int = 50, min_length: int = 0, forbid_unk: bool = False
) -> list[list[int]]:
    """The most probable token at each step for every code in z (B, Z); <eos> is barred before
    ``min_length`` tokens, and decoding stops when every sentence has ended or after
    ``max_length`` tokens. Returns each sentence's token ids without <bos>/<eos>.

    One decoder call per step on the new token only, with the cached state (LSTM state or
    attention keys and values): T tokens cost T single-token steps, batched over sentences.
    """
    return _decode_step_by_step(
        decoder, z, lambda scores: scores.argmax(dim=-1), max_length=max_length, min_length=min_length, forbid_unk=forbid_unk
    )


def _decode_step_by_step(
    decoder, z: torch.Tensor, choose, *, max_length: int, min_length: int, forbid_unk: bool = False
) -> list[list[int]]:
    """The loop greedy decoding and sampling share: one cached decoder step per position, <eos>
    barred before ``min_length``, ``choose(scores (B, V)) -> (B,)`` picks the next tokens; stops
    when every sentence has ended or after ``max_length`` tokens."""
    batch = z.shape[0]
    token = torch.full((batch, 1), BOS_ID, dtype=torch.long, device=z.device)
    finished = torch.zeros(batch, dtype=torch.bool, device=z.device)
    state = None
    steps: list[torch.Tensor] = []
    for position in range(longest(decoder, max_length)):
        log_probs, state = decoder.log_probs(token, z, state)  # (B, 1, V)
        scores = log_probs[:, -1].float()  # a fresh tensor (a copy for half precision) or a view
        if position < min_length or forbid_unk:
            scores = scores.clone()
            if position < min_length:
                scores[:, EOS_ID] = float("-inf")
            if forbid_unk:
                scores[:, UNK_ID] = float("-inf")
        token = choose(scores).unsqueeze(1)  # (B, 1)
        steps.append(token.squeeze(1))
        finished |= token.squeeze(1) == EOS_ID
        if bool(finished.all()):
            break
    return cut_at_eos(torch.stack(steps, dim=1).tolist())  # (B, L) -> cut at <eos>


def filter_logits(scores: torch.Tensor, *, top_k: int = 0, top_p: float = 1.0) -> torch.Tensor:
    """Scores (B, V) with every token outside the ``top_k`` best (0: no limit) and outside the
    nucleus (the fewest most probable tokens whose probability reaches ``top_p``) set to -inf.
    The most probable token always stays."""
    if top_k and top_k < scores.shape[-1]:
        kth = scores.topk(top_k, dim=-1).values[:, -1:]
        scores = scores.masked_fill(scores < kth, float("-inf"))
    if top_p < 1.0:
        probabilities = scores.softmax(dim=-1)
        vocab = scores.shape[-1]
        # A trained model's nucleus usually holds tens to hundreds of tokens: rank only the 64, then
        # the 1,024 most probable, and sort the whole vocabulary only when some row's nucleus
        # reaches beyond them (exact either way; a partial ranking costs a fraction of a sort).
        for k in (64, 1024, vocab):
            if k >= vocab:
                top, order = probabilities.sort(dim=-1, descending=True)
                break
            top, order = probabilities.topk(k, dim=-1)  # (B, k), most probable first
            if bool((top.sum(dim=-1) >= top_p).all()):
                break
        keep = top.cumsum(dim=-1) - top < top_p  # the mass ranked higher has not reached top_p yet
        keep[:, 0] = True
        kept = torch.zeros_like(scores, dtype=torch.bool).scatter(1, order, keep)
        scores = scores.masked_fill(~kept, float("-inf"))
    return scores


def draw(scores: torch.Tensor, *, generator: torch.Generator | None = None) -> torch.Tensor:
    """One index per row of scores (B, V) drawn from softmax(scores), by the Gumbel-max trick
    (Gumbel 1954; Maddison et al. 2014): argmax(scores + G), G = -log(-log U), U ~ Uniform(0, 1),
    which costs a fraction of ``torch.multinomial`` over a large vocabulary. (B,)"""
    uniform = torch.rand(scores.shape, generator=generator, device=scores.device).clamp_(min=1e-20)
    return (scores - torch.log(-torch.log(uniform))).argmax(dim=-1)


@torch.no_grad()
def sample_decode(
    decoder,
    z: torch.Tensor,
    *,
    temperature: float = 1.0,
    top_k: int = 0,
    top_p: float = 1.0,
    max_length: int = 50,
    min_length: int = 0,
    generator: torch.Generator | None = None,
    forbid_unk: bool = False,
) -> list[list[int]]:
    """Ancestral sampling: at each step a token drawn from softmax(logits / temperature) after
    :func:`filter_logits`; incremental and batched like :func:`greedy_decode`."""

    def choose(scores: torch.Tensor) -> torch.Tensor:
        return draw(filter_logits(scores / temperature, top_k=top_k, top_p=top_p), generator=generator)

    return _decode_step_by_step(decoder, z, choose, max_length=max_length, min_length=min_length, forbid_unk=forbid_unk)


@torch.no_grad()
def beam_decode(
    decoder,
    z: torch.Tensor,
    *,
    beam_size: int = 5,
    length_penalty: float = 0.0,
    max_length: int = 50,
    min_length: int = 0,
    forbid_unk: bool = False,
) -> list[list[int]]:
    """Beam search, batched over sentences: B x W hypotheses decoded as one batch with the cached
    state, which follows its hypothesis through ``decoder.reorder_state`` at every step. A
    finished hypothesis stays in the beam at its score (it can only be extended by padding at no
    cost); at the end each sentence's hypotheses are ranked by log p / length ** length_penalty
    (length: tokens with <eos>). Width 1 is greedy decoding."""
    batch, width = z.shape[0], beam_size
    device = z.device
    z_beams = z.repeat_interleave(width, dim=0)  # (B * W, Z)
    token = torch.full((batch * width, 1), BOS_ID, dtype=torch.long, device=device)
    scores = torch.full((batch, width), float("-inf"), device=device)
    scores[:, 0] = 0.0  # all beams start as the same empty hypothesis: keep one
    finished = torch.zeros(batch, width, dtype=torch.bool, device=device)
    lengths = torch.zeros(batch, width, device=device)
    history = torch.empty(batch, width, 0, dtype=torch.long, device=device)
    offsets = (torch.arange(batch, device=device) * width).unsqueeze(1)
    state = None
    for position in range(longest(decoder, max_length)):
        log_probs, state = decoder.log_probs(token, z_beams, state)
        log_probs = log_probs[:, -1].float().view(batch, width, -1)  # (B, W, V)
        vocab = log_probs.shape[-1]
        if position < min_length:
            log_probs[..., EOS_ID] = float("-inf")
        if forbid_unk:
            log_probs[..., UNK_ID] = float("-inf")
        ended = torch.full((vocab,), float("-inf"), device=device)
        ended[PAD_ID] = 0.0
        log_probs = torch.where(finished.unsqueeze(-1), ended, log_probs)
        scores, best = (scores.unsqueeze(-1) + log_probs).view(batch, width * vocab).topk(width, dim=-1)
        beam, word = best // vocab, best % vocab  # (B, W) each
        state = decoder.reorder_state(state, (beam + offsets).view(-1))
        history = torch.cat([history.gather(1, beam.unsqueeze(-1).expand(-1, -1, history.shape[-1])), word.unsqueeze(-1)], dim=-1)
        was_finished = finished.gather(1, beam)
        lengths = lengths.gather(1, beam) + (~was_finished).float()
        finished = was_finished | (word == EOS_ID)
        token = word.view(-1, 1)
        if bool(finished.all()):
            break
    ranked = scores / lengths.clamp(min=1.0).pow(length_penalty) if length_penalty else scores
    chosen = history[torch.arange(batch, device=device), ranked.argmax(dim=-1)]  # (B, L)
    return cut_at_eos(chosen.tolist())  # a finished hypothesis is padded after its <eos>


def sample_prior(num_samples: int, latent_dim: int, *, generator: torch.Generator | None = None) -> torch.Tensor:
    """z ~ N(0, I), (N, Z)."""
    return torch.randn(num_samples, latent_dim, generator=generator)


def slerp_path(start: torch.Tensor, end: torch.Tensor, steps: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Spherical linear interpolation (White 2016, "Sampling Generative Networks"):
    slerp(z0, z1; t) = sin((1 - t) theta) / sin(theta) z0 + sin(t theta) / sin(theta) z1, theta the
    angle between z0 and z1, at ``steps`` evenly spaced t in [0, 1]. It follows the great circle,
    so with |z0| = |z1| every point keeps that norm (a linear path cuts through the low-density
    centre of a Gaussian prior). Nearly parallel endpoints fall back to the linear path."""
    if steps < 2:
        raise ValueError("an interpolation needs at least 2 steps (its two endpoints)")
    t = torch.linspace(0.0, 1.0, steps, dtype=start.dtype, device=start.device)
    cosine = torch.dot(start, end) / (start.norm() * end.norm()).clamp_min(1e-12)
    theta = torch.arccos(cosine.clamp(-1.0, 1.0))
    if float(theta.sin()) < 1e-6:
        return linear_path(start, end, steps)
    weights_start = torch.sin((1 - t) * theta) / torch.sin(theta)
    weights_end = torch.sin(t * theta) / torch.sin(theta)
    return t, weights_start.unsqueeze(1) * start.unsqueeze(0) + weights_end.unsqueeze(1) * end.unsqueeze(0)


def linear_path(start: torch.Tensor, end: torch.Tensor, steps: int) -> tuple[torch.Tensor, torch.Tensor]:
    """phi(t) = z0 + t (z1 - z0) at ``steps`` evenly spaced t in [0, 1], endpoints included
    (the notes, section 3.3; Bowman et al. 2016's homotopies). Returns t (K,) and codes (K, Z)."""
    if steps < 2:
        raise ValueError("an interpolation needs at least 2 steps (its two endpoints)")
    t = torch.linspace(0.0, 1.0, steps, dtype=start.dtype, device=start.device)
    return t, start.unsqueeze(0) + t.unsqueeze(1) * (end - start).unsqueeze(0)


PATHS = {"linear": linear_path, "slerp": slerp_path}
"""Interpolation paths by name, as ``seqvae interpolate --path`` takes them."""

"""The decoder's output layer: hidden states -> p(x_t | x_<t, z) over the whole vocabulary.

Two layers, both exact normalised distributions over all V tokens, so every likelihood measure
(reconstruction, ELBO, IW-NLL, perplexities) is exact for the model that uses them:

- ``softmax``: one linear map to V logits and a softmax.
- ``adaptive``: the adaptive softmax of Grave et al. 2017 ("Efficient softmax approximation for
  GPUs"). Token ids are ordered by training frequency; the ``cutoffs`` c_1 < ... < c_n split them
  into a head (the c_1 most frequent ids plus one entry per tail cluster) and n tail clusters
  [c_i, c_{i+1}) whose inputs are projected to H / div^i dimensions. Then
  log p(w) = log p_head(w) for a head word and log p_head(cluster i) + log p_i(w) for a word of
  cluster i. Training and scoring compute only the head and the clusters that hold a target; the
  full log-distribution (decoding) computes everything.

Each layer offers the same three things, which are all its callers need:

- ``log_prob(features)``: (..., F) -> (..., V), the full log-distribution;
- ``token_log_prob(features, targets)``: (..., F), (...) -> (...), log p of the targets only;
- ``sequence_nll(features, targets, mask)``: (B, T, F) -> (B,), -log p(x|z) summed over the
  real targets (words + EOS) of each sentence.

The adaptive layer is ``torch.nn.AdaptiveLogSoftmaxWithLoss`` (its target-only ``forward`` and its
``log_prob``), with one change: tied to the input embedding, the head's rows for the c_1 most
frequent words are those words' embeddings (the tail clusters, of H / div^i dimensions, cannot
share the E-dimensional embedding rows and keep their own weights).

Shapes: B sentences, T positions, F features (H, or E when a tied projection bridges H to E),
V vocabulary.
"""

from __future__ import annotations

import functools

import torch
import torch.nn.functional as F
from torch import nn

OUTPUT_LAYERS = ("softmax", "adaptive")

SCORING_BYTES = 16 * 1024 * 1024
"""Logits computed at once by the full softmax when scoring without gradients (under the 32 MB up
to which the C allocator reuses freed blocks, seqvae.allocator)."""


def sequence_nll(logits: torch.Tensor, targets: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """-log p(x|z) per sentence, (B,): token cross-entropy of full-softmax logits summed over real
    targets (words + EOS). logits (B, T, V), targets (B, T), mask (B, T) with True = real token."""
    batch, steps, vocab = logits.shape
    # Flattened to (B*T, V): the softmax runs over contiguous rows; cross_entropy over (B, V, T)
    # would copy the transposed logits first (2.7x slower at a 10k vocabulary, forward and backward).
    token_nll = F.cross_entropy(logits.reshape(-1, vocab), targets.reshape(-1), reduction="none").view(batch, steps)
    return (token_nll * mask).sum(dim=1)


def in_fp32(method):
    """Run an output layer's full log-distribution in fp32 under autocast (decoding under
    ``train.precision``; evaluation runs without autocast). Training's target-only scoring instead
    runs as standard mixed precision does (``token_log_prob``): the projection in the autocast
    type, whose matrix products accumulate in fp32, and the log-softmax and loss in fp32."""

    @functools.wraps(method)
    def scored(self, features: torch.Tensor, *args):
        if not torch.is_autocast_enabled(features.device.type):
            return method(self, features, *args)
        with torch.autocast(features.device.type, enabled=False):
            return method(self, features.float(), *args)

    return scored


def few_row_counts(rows: torch.Tensor) -> torch.Tensor:
    """``rows`` (indices) padded with copies of its first to a count of few distinct values: the
    next multiple of max(16, 2^(bits - 4)), at most an eighth more. On the CPU in bf16, oneDNN
    builds (JIT-compiles) a kernel for each new matrix shape, and the number of positions whose
    target lies in a tail cluster is new almost every batch: on PTB at one thread (Li et al.'s
    sizes, the first 400 batches of an epoch) padding took a step from 63.0 to 55.5 ms, and on
    the same batches again from 65.6 to 55.5 ms, whose kernels the cache (1,024 by default) had
    already dropped (benchmarks/new_shapes.py, benchmarks/README.md). The copies' scores are cut
    off before use, so they get no gradient."""
    count = rows.numel()
    unit = max(16, 1 << max(count.bit_length() - 4, 0))
    size = -(-count // unit) * unit
    return rows if size == count else torch.cat([rows, rows[:1].expand(size - count)])


class _SentenceScores:
    """``sequence_nll`` from ``token_log_prob``, the same for both layers."""

    def sequence_nll(self, features: torch.Tensor, targets: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """(B, T, F) -> (B,): -log p(x|z) summed over each sentence's real targets (padding
        targets are <pad>, a head word for the adaptive layer, so they cost no tail cluster)."""
        return -(self.token_log_prob(features, targets) * mask).sum(dim=1)


class SoftmaxOutput(_SentenceScores, nn.Linear):
    """Logits W h + b over the whole vocabulary and their softmax. Tied (Press & Wolf 2017), W is
    the input embedding matrix (the state_dict keys are those of the plain ``nn.Linear``)."""

    @property
    def scores_per_position(self) -> int:
        """Scores the target-only path computes per position: all V logits."""
        return self.out_features

    @in_fp32
    def log_prob(self, features: torch.Tensor) -> torch.Tensor:
        """(..., F) -> (..., V) log-probabilities."""
        return F.log_softmax(self(features), dim=-1)

    def token_log_prob(self, features: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """(..., F), targets (...) -> log p(target) (...). Under autocast the logits come from
        the projection in its type and the cross-entropy takes them in fp32 (``in_fp32``).
        Without gradients (scoring), the logits are computed for ``SCORING_BYTES`` worth of
        positions at a time, so their buffers stay small enough to be reused from one block to
        the next."""
        flat, flat_targets = features.reshape(-1, features.shape[-1]), targets.reshape(-1)
        block = max(1, SCORING_BYTES // (4 * self.out_features))
        if (torch.is_grad_enabled() and features.requires_grad) or flat.shape[0] <= block:
            return -F.cross_entropy(self(flat).float(), flat_targets, reduction="none").view(targets.shape)
        parts = [
            -F.cross_entropy(self(flat[start : start + block]).float(), flat_targets[start : start + block], reduction="none")
            for start in range(0, flat.shape[0], block)
        ]
        return torch.cat(parts).view(targets.shape)


class _TiedHead(nn.Module):
    """The adaptive head with its shortlist rows taken from the input embedding: logits for the
    c_1 most frequent words are e_w . h (+ b_w), those for the tail clusters come from weights of
    their own."""

    def __init__(self, embedding: nn.Parameter, *, shortlist_size: int, clusters: int, bias: bool) -> None:
        super().__init__()
        self.shortlist_size = shortlist_size
        self.embedding = embedding  # the decoder's input embedding (V, E), shared, not copied
        self.cluster_weight = nn.Parameter(torch.empty(clusters, embedding.shape[1]))
        self.bias = nn.Parameter(torch.zeros(shortlist_size + clusters)) if bias else None
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """The cluster rows as ``nn.Linear`` initialises weights, the bias zero; the shared
        embedding rows belong to the embedding and are left alone."""
        nn.init.kaiming_uniform_(self.cluster_weight, a=5**0.5)
        if self.bias is not None:
            nn.init.zeros_(self.bias)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        weight = torch.cat([self.embedding[: self.shortlist_size], self.cluster_weight])
        return F.linear(features, weight, self.bias)


class AdaptiveOutput(_SentenceScores, nn.AdaptiveLogSoftmaxWithLoss):
    """The adaptive softmax (Grave et al. 2017) over a frequency-ordered vocabulary; see the module
    docstring. ``tie_to``: the input embedding whose first c_1 rows become the head's shortlist."""

    def __init__(
        self,
        in_features: int,
        vocab_size: int,
        *,
        cutoffs: tuple[int, ...] | list[int],
        div_value: float = 4.0,
        tie_to: nn.Parameter | None = None,
    ) -> None:
        check_adaptive(cutoffs, div_value, vocab_size=vocab_size, in_features=in_features)
        super().__init__(in_features, vocab_size, list(cutoffs), div_value=div_value, head_bias=True)
        if tie_to is not None:
            self.head = _TiedHead(tie_to, shortlist_size=self.shortlist_size, clusters=self.n_clusters, bias=True)

    @property
    def scores_per_position(self) -> int:
        """Scores the target-only path computes per position: the head's (a tail cluster's, for
        the few positions whose target lies in one, come on top)."""
        return self.head_size

    @in_fp32
    def log_prob(self, features: torch.Tensor) -> torch.Tensor:
        """(..., F) -> (..., V) log-probabilities: the head and every cluster."""
        flat = features.reshape(-1, features.shape[-1])
        return super().log_prob(flat).view(*features.shape[:-1], self.n_classes)

    def token_log_prob(self, features: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """(..., F), targets (...) -> log p(target) (...): the head for every position, a tail
        cluster only for the positions whose target lies in it. Without autocast, torch's own
        target-only forward; under it, the same computation with the projections in the autocast
        type and each log-softmax in fp32 (torch's would run them in bf16 on the CPU)."""
        flat, flat_targets = features.reshape(-1, features.shape[-1]), targets.reshape(-1)
        if not torch.is_autocast_enabled(features.device.type):
            return super().forward(flat, flat_targets).output.view(targets.shape)
        scores = flat.new_zeros(flat_targets.shape, dtype=torch.float32)
        head_index = flat_targets.clone()  # a tail word is scored at its cluster's head entry
        for cluster, (low, high) in enumerate(zip(self.cutoffs[:-1], self.cutoffs[1:])):
            rows = ((flat_targets >= low) & (flat_targets < high)).nonzero().squeeze(1)
            if rows.numel() == 0:
                continue
            projected = rows if flat.device.type != "cpu" else few_row_counts(rows)
            cluster_log_prob = F.log_softmax(self.tail[cluster](flat.index_select(0, projected)).float(), dim=-1)[: len(rows)]
            within = cluster_log_prob.gather(1, (flat_targets.index_select(0, rows) - low).unsqueeze(1)).squeeze(1)
            scores = scores.index_copy(0, rows, within)
            head_index = head_index.index_fill(0, rows, self.shortlist_size + cluster)
        head_log_prob = F.log_softmax(self.head(flat).float(), dim=-1)
        return (scores + head_log_prob.gather(1, head_index.unsqueeze(1)).squeeze(1)).view(targets.shape)


def check_adaptive(cutoffs, div_value: float, *, vocab_size: int, in_features: int) -> None:
    """Raise ValueError naming what is wrong with adaptive-softmax settings for this vocabulary."""
    cutoffs = list(cutoffs)
    if not cutoffs:
        raise ValueError("model.adaptive_cutoffs: give at least one cutoff")
    if any(b <= a for a, b in zip(cutoffs, cutoffs[1:])) or cutoffs[0] < 1:
        raise ValueError(f"model.adaptive_cutoffs={cutoffs}: cutoffs must be positive and increasing")
    if cutoffs[-1] >= vocab_size:
        raise ValueError(
            f"model.adaptive_cutoffs={cutoffs}: every cutoff must be below the vocabulary size {vocab_size} "
            f"(the last tail cluster runs from the last cutoff to the end of the vocabulary)"
        )
    if div_value < 1.0:
        raise ValueError(f"model.adaptive_div_value={div_value}: must be at least 1")
    smallest = int(in_features // (div_value ** len(cutoffs)))
    if smallest < 1:
        raise ValueError(
            f"model.adaptive_div_value={div_value}: the last of {len(cutoffs)} tail clusters would have "
            f"{in_features} / {div_value}^{len(cutoffs)} < 1 dimensions"
        )


def build_output_layer(
    kind: str,
    *,
    in_features: int,
    vocab_size: int,
    embedding: nn.Embedding,
    tie: bool,
    cutoffs: tuple[int, ...] = (),
    div_value: float = 4.0,
) -> nn.Module:
    """The output layer ``kind`` (``softmax`` or ``adaptive``) reading ``in_features``; tied to
    ``embedding`` when ``tie`` (then ``in_features`` must be the embedding size)."""
    if kind == "softmax":
        layer = SoftmaxOutput(in_features, vocab_size)
        if tie:
            layer.weight = embedding.weight
        return layer
    if kind == "adaptive":
        return AdaptiveOutput(
            in_features, vocab_size, cutoffs=cutoffs, div_value=div_value, tie_to=embedding.weight if tie else None
        )
    raise ValueError(f"unknown output layer '{kind}'; choices: {', '.join(OUTPUT_LAYERS)}")

"""Token-id sequences, the length policy, and length-bucketed batches.

A sentence of n tokens becomes one row of a :class:`Batch`: the decoder reads
``<bos> x_1 ... x_n`` and predicts ``x_1 ... x_n <eos>``; the encoder reads the targets. Padding is
represented one way, by ``mask`` (True = real target token).

Bucketing: each epoch the sentences are shuffled, cut into pools of ``pool_batches`` batches,
each pool is sorted by length and cut into batches, and the order of all batches is shuffled.
Every sentence is used exactly once per epoch, and the order is a pure function of (seed, epoch),
which is what lets a resumed run see the same batches as an uninterrupted one.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from seqvae.data.tokenizers import BOS_ID, EOS_ID, PAD_ID


@dataclass
class EncodedSplit:
    """Token ids of one split after the length policy, with what the policy did."""

    sequences: list[list[int]]
    truncated: int = 0
    dropped: int = 0
    longest: int = 0
    """The most tokens any sentence had before the length policy."""
    words: int = 0
    """Whitespace-separated words of the kept sentences' text plus one end-of-sentence each: the
    denominator of per-word perplexities, whatever the tokenizer makes of the words."""

    @property
    def lengths(self) -> list[int]:
        return [len(sequence) for sequence in self.sequences]

    @property
    def num_tokens(self) -> int:
        """Predicted tokens: every token plus one end-of-sentence per sentence."""
        return sum(self.lengths) + len(self.sequences)


def encode_split(tokenizer, sentences: list[str], *, max_length: int = 0, policy: str = "truncate") -> EncodedSplit:
    """Tokenize sentences, then truncate to ``max_length`` tokens or drop longer ones (counted)."""
    result = EncodedSplit(sequences=[])
    for sentence in sentences:
        ids = tokenizer.encode(sentence)
        result.longest = max(result.longest, len(ids))
        if max_length and len(ids) > max_length:
            if policy == "drop":
                result.dropped += 1
                continue
            ids = ids[:max_length]
            result.truncated += 1
        result.sequences.append(ids)
        result.words += len(sentence.split()) + 1
    return result


@dataclass
class Batch:
    """Padded tensors for B sentences of at most T - 1 tokens.

    Shapes: ``inputs``, ``targets``, ``mask``: (B, T); ``lengths``: (B,) = tokens + 1 (EOS).
    """

    inputs: torch.Tensor
    targets: torch.Tensor
    mask: torch.Tensor
    lengths: torch.Tensor

    def to(self, device: torch.device | str) -> Batch:
        return Batch(
            inputs=self.inputs.to(device),
            targets=self.targets.to(device),
            mask=self.mask.to(device),
            lengths=self.lengths.to(device),
        )

    @property
    def num_sentences(self) -> int:
        return self.inputs.shape[0]

    @property
    def num_tokens(self) -> int:
        return int(self.mask.sum())


def collate(sequences: list[list[int]]) -> Batch:
    """Pad token-id sequences into a :class:`Batch` (one Python step per sentence, none per token)."""
    lengths = torch.tensor([len(sequence) + 1 for sequence in sequences], dtype=torch.long)
    width = int(lengths.max())
    inputs = torch.full((len(sequences), width), PAD_ID, dtype=torch.long)
    targets = torch.full((len(sequences), width), PAD_ID, dtype=torch.long)
    for row, sequence in enumerate(sequences):
        ids = torch.tensor(sequence, dtype=torch.long)
        n = len(sequence)
        inputs[row, 0] = BOS_ID
        inputs[row, 1 : n + 1] = ids
        targets[row, :n] = ids
        targets[row, n] = EOS_ID
    mask = torch.arange(width).unsqueeze(0) < lengths.unsqueeze(1)
    return Batch(inputs=inputs, targets=targets, mask=mask, lengths=lengths)


def _epoch_generator(seed: int, epoch: int) -> torch.Generator:
    generator = torch.Generator()
    generator.manual_seed(seed * 1_000_003 + epoch)
    return generator


def bucketed_batches(
    lengths: list[int], *, batch_size: int, seed: int, epoch: int, pool_batches: int = 50
) -> list[list[int]]:
    """Index batches for one training epoch: similar lengths together, order shuffled per epoch."""
    generator = _epoch_generator(seed, epoch)
    order = torch.randperm(len(lengths), generator=generator).tolist()
    pool_size = batch_size * pool_batches
    batches: list[list[int]] = []
    for start in range(0, len(order), pool_size):
        pool = sorted(order[start : start + pool_size], key=lengths.__getitem__)
        batches.extend(pool[i : i + batch_size] for i in range(0, len(pool), batch_size))
    permutation = torch.randperm(len(batches), generator=generator).tolist()
    return [batches[i] for i in permutation]


EVAL_ROW_TOKENS = 128
"""Evaluation batches hold at most ``batch_size * EVAL_ROW_TOKENS`` padded tokens: on a corpus
whose sentences are all shorter (PTB's longest has 83) the batches are those of ``batch_size``
alone; a rare very long line (a whole document) gets a small batch of its own instead of padding
a full batch to its length, which multiplies the cost of the IW bound and the decodes."""


def sorted_batches(lengths: list[int], *, batch_size: int, max_tokens: int = 0) -> list[list[int]]:
    """Index batches for evaluation: sorted by length (least padding), deterministic; with
    ``max_tokens``, a batch also ends before its rows times its longest length would exceed it
    (one row at least)."""
    order = sorted(range(len(lengths)), key=lengths.__getitem__)
    batches: list[list[int]] = []
    batch: list[int] = []
    for index in order:  # ascending: the row being added is the batch's longest
        if batch and (len(batch) == batch_size or (max_tokens and (len(batch) + 1) * lengths[index] > max_tokens)):
            batches.append(batch)
            batch = []
        batch.append(index)
    if batch:
        batches.append(batch)
    return batches

"""What a corpus looks like before any choice is made: its size, its vocabulary, its sentence
lengths and whether it was tokenised. recipes/text/run.py decides the tokenizer, the vocabulary,
the length limit and the model's sizes from these figures (seqvae.corpus_decisions).

>>> profile = profile_corpus(["the cat sat .", "a dog ran ."])
>>> profile.tokenised, profile.word_types
(True, 6)
"""

from __future__ import annotations

import math
import random
import re
from collections import Counter
from dataclasses import asdict, dataclass

from seqvae.data.tokenizers import UNK

_CLITIC = re.compile(r"^('s|'re|'ve|'ll|'d|'m|n't)$", re.IGNORECASE)
_GLUED = re.compile(r"\w[,;:!?\"')\]]+$|^[\"'(\[]\w|\w'(s|re|ve|ll|d|m)$|\wn't$", re.IGNORECASE)
_FINAL_GLUED = re.compile(r"\w[.!?][\"')]*$")

GLUED_TOKENS_RAW = 0.005
"""A corpus with more than this share of whitespace tokens that carry punctuation or a clitic
glued to a word ("word,", "(word", "isn't", "company's") is raw text. Measured: PTB and the
embedded corpus, both tokenised, have 0.0000; the same corpora written back as raw text
(recipes/text/detokenize.py) have 0.0154 and 0.0469."""
FINAL_GLUED_RAW = 0.25
"""Or: more than this share of sentences end in a word with its full stop attached ("here.").
Tokenised PTB: 0.003 (abbreviations such as "inc."); the raw embedded corpus: 1.000."""


@dataclass(frozen=True)
class CorpusProfile:
    """Figures of a training split, over whitespace-separated tokens."""

    sentences: int
    tokens: int
    word_types: int
    singleton_types: int
    """Types seen once: with min_frequency 1 the model meets each in training once and never
    learns ``<unk>``."""
    has_unk: bool
    """The text already holds ``<unk>`` (a corpus prepared with its own vocabulary, as PTB)."""
    glued_share: float
    """Share of tokens with punctuation or a clitic glued to a word (see GLUED_TOKENS_RAW)."""
    final_glued_share: float
    """Share of sentences ending in a word with its full stop attached."""
    lengths: dict[str, int]
    """Sentence length in tokens (EOS not counted): ``median``, ``p95``, ``p99``, ``p99.9``, ``max``."""
    frequencies: tuple[int, ...]
    """Every type's count, most frequent first (for coverage at a frequency cut)."""

    @property
    def tokenised(self) -> bool:
        """Punctuation and clitics stand as tokens of their own: word tokens suit it."""
        return self.glued_share <= GLUED_TOKENS_RAW and self.final_glued_share <= FINAL_GLUED_RAW

    def vocabulary_at(self, min_frequency: int) -> tuple[int, float]:
        """Word types kept with ``min_frequency`` and the share of training tokens they cover."""
        kept = [count for count in self.frequencies if count >= min_frequency]
        return len(kept), sum(kept) / max(self.tokens, 1)

    def summary(self) -> dict:
        figures = asdict(self)
        figures.pop("frequencies")
        figures["tokenised"] = self.tokenised
        return figures


def quantile(sorted_values: list[int], q: float) -> int:
    """The nearest-rank ``q`` quantile of sorted values: the smallest value with at least a share
    q of the values at or below it."""
    if not sorted_values:
        return 0
    rank = max(math.ceil(q * len(sorted_values)), 1)
    return sorted_values[rank - 1]


def length_quantiles(lengths: list[int]) -> dict[str, int]:
    ordered = sorted(lengths)
    return {
        "median": quantile(ordered, 0.5),
        "p95": quantile(ordered, 0.95),
        "p99": quantile(ordered, 0.99),
        "p99.9": quantile(ordered, 0.999),
        "max": ordered[-1] if ordered else 0,
    }


def profile_corpus(sentences: list[str]) -> CorpusProfile:
    """The figures of a split of sentences (one string each)."""
    counts: Counter[str] = Counter()
    lengths, glued, final_glued = [], 0, 0
    for sentence in sentences:
        tokens = sentence.split()
        counts.update(tokens)
        lengths.append(len(tokens))
        glued += sum(1 for token in tokens if _GLUED.search(token) and not _CLITIC.match(token))
        if tokens and _FINAL_GLUED.search(tokens[-1]):
            final_glued += 1
    total = sum(lengths)
    return CorpusProfile(
        sentences=len(sentences),
        tokens=total,
        word_types=len(counts),
        singleton_types=sum(1 for count in counts.values() if count == 1),
        has_unk=UNK in counts,
        glued_share=round(glued / max(total, 1), 6),
        final_glued_share=round(final_glued / max(len(sentences), 1), 6),
        lengths=length_quantiles(lengths),
        frequencies=tuple(sorted(counts.values(), reverse=True)),
    )


def carve_split(sentences: list[str], count: int, *, seed: int = 0) -> tuple[list[str], list[str]]:
    """``count`` sentences drawn at random (``seed``) as a held-out split, and the rest in their
    order: ``(rest, held_out)``. The held-out sentences keep their corpus order too."""
    if not 0 < count < len(sentences):
        raise ValueError(f"cannot hold out {count} of {len(sentences)} sentences")
    chosen = set(random.Random(seed).sample(range(len(sentences)), count))
    rest = [s for i, s in enumerate(sentences) if i not in chosen]
    held_out = [s for i, s in enumerate(sentences) if i in chosen]
    return rest, held_out

"""The choices recipes/text/run.py makes for a corpus it has never seen, each a pure function of
the corpus's figures (seqvae.data.profile.CorpusProfile): a :class:`Decision` with the config
keys it sets and the reason printed beside it.

- :func:`decide_tokenizer`: word or SentencePiece tokens, the vocabulary and its frequency cut;
- :func:`decide_output_layer`: full or adaptive softmax by the vocabulary's size;
- :func:`decide_length`: the length limit;
- :func:`validation_size`: the validation split carved from training where a corpus has none;
- :func:`decide_sizes`: the model's sizes by the training split's tokens.

The plan that fits the run into its time budget is seqvae.planning's.
"""

from __future__ import annotations

from dataclasses import dataclass

from seqvae.data.profile import CorpusProfile

ADAPTIVE_FROM = 500
"""Vocabulary size from which the adaptive softmax is chosen: benchmarks/output_layer.py measured
its step at 0.60 of the full softmax's at 2,000 types and 0.80 at 500 (Li et al.'s sizes), and
no faster at 100 to 350 types (0.92 to 1.09 at the quickstart's sizes), one thread, 2026-12-03."""
WORD_VOCABULARY_CAP = 30_000
"""A word vocabulary above this many types raises the frequency cut: the output layer and the
embeddings of rare words cost more steps than they give."""
SENTENCEPIECE_SIZES = (256, 500, 1000, 2000, 4000, 8000, 16000)
"""SentencePiece vocabulary sizes the recipe chooses from: half the word forms (raw text has
several forms of a word, "here" and "here."), rounded down to one of these. A small corpus may
hold fewer pieces than that; recipes/text/run.py then takes the most SentencePiece can make."""
VALID_SHARE, VALID_MAX, VALID_MIN = 0.05, 3000, 100
"""A validation split carved from training: 5% of it, at most 3,000 and at least 100 sentences."""
SPLIT_SEED = 0
"""The seed of the carved validation split (reported, so the split can be made again)."""


@dataclass(frozen=True)
class Decision:
    """One choice: what it is, the value a user reads, the config overrides it sets, and why."""

    what: str
    value: str
    overrides: tuple[str, ...]
    why: str

    def line(self) -> str:
        return f"{self.what}: {self.value}. Why: {self.why}"


def decide_tokenizer(profile: CorpusProfile) -> Decision:
    if not profile.tokenised:
        size = max([s for s in SENTENCEPIECE_SIZES if s <= max(profile.word_types // 2, SENTENCEPIECE_SIZES[0])])
        return Decision(
            "tokens", f"SentencePiece (unigram), {size} pieces", ("tokenizer.kind=sentencepiece", f"tokenizer.vocab_size={size}"),
            f"raw text: {100 * profile.glued_share:.1f}% of words carry punctuation or a clitic and "
            f"{100 * profile.final_glued_share:.0f}% of sentences end in a word with its full stop attached; "
            f"{size} pieces for its {profile.word_types:,} word forms",
        )
    if profile.has_unk:
        cut, reason = 1, "the text already marks rare words as <unk>"
    elif not profile.singleton_types:
        cut, reason = 1, "every word is seen at least twice"
    else:
        cut = 2  # a word seen once is learned as <unk>, so that unknown words at test time are modelled
        reason = f"{profile.singleton_types:,} words seen once become <unk>, so the model learns <unk>"
    while profile.vocabulary_at(cut)[0] > WORD_VOCABULARY_CAP:
        cut += 1
        reason = f"the smallest cut that keeps at most {WORD_VOCABULARY_CAP:,} words"
    kept, coverage = profile.vocabulary_at(cut)
    return Decision(
        "tokens", f"words, {kept:,} types seen at least {cut} time{'s' if cut > 1 else ''}, {100 * coverage:.1f}% of tokens",
        ("tokenizer.kind=word", f"tokenizer.min_frequency={cut}"),
        f"tokenised text, punctuation apart from the words in all but {100 * profile.glued_share:.2f}% of them; {reason}",
    )


def decide_output_layer(vocab_size: int) -> Decision:
    if vocab_size >= ADAPTIVE_FROM:
        cutoffs = (vocab_size // 5, 3 * vocab_size // 5)
        return Decision(
            "output layer", f"adaptive softmax, clusters at {cutoffs[0]:,} and {cutoffs[1]:,}",
            ("model.output_layer=adaptive", f"model.adaptive_cutoffs={cutoffs[0]},{cutoffs[1]}"),
            f"exact, and faster from {ADAPTIVE_FROM} types on, as benchmarks/output_layer.py measured; "
            "cutoffs at the shares of PTB's [2000, 6000]",
        )
    return Decision("output layer", "full softmax", ("model.output_layer=softmax",),
                    f"{vocab_size} types: the adaptive softmax gains nothing below {ADAPTIVE_FROM}")


def decide_length(lengths: dict[str, int], unit: str) -> Decision:
    """No limit when the longest sentence is within twice the 99th percentile and at most 128;
    else the 99.9th percentile, longer sentences truncated."""
    if lengths["max"] <= max(2 * lengths["p99"], 1) and lengths["max"] <= 128:
        return Decision("length limit", "none", ("data.max_length=0",),
                        f"the longest sentence has {lengths['max']} {unit}, the 99th percentile {lengths['p99']}")
    limit = max(lengths["p99.9"], lengths["p99"], 1)
    return Decision(
        "length limit", f"{limit} {unit}, longer sentences truncated", (f"data.max_length={limit}", "data.length_policy=truncate"),
        f"99.9% of sentences have at most {limit} {unit}; the longest has {lengths['max']} (median {lengths['median']})",
    )


def validation_size(train_sentences: int) -> int:
    """Sentences to carve from a training split for validation."""
    size = min(max(round(VALID_SHARE * train_sentences), VALID_MIN), VALID_MAX)
    return min(size, train_sentences // 2)


def decide_sizes(train_tokens: int) -> Decision:
    """The model's sizes by the training split's size in tokens."""
    if train_tokens < 300_000:
        return Decision(
            "model", "LSTM encoder, bidirectional, and decoder, embedding 64, hidden 192, latent 16",
            ("model.embedding_dim=64", "model.hidden_dim=192", "model.latent_dim=16", "model.bidirectional=true",
             "train.learning_rate=0.003"),
            f"{train_tokens:,} training tokens: the quickstart's sizes and learning rate 3e-3, made for its 122k tokens",
        )
    if train_tokens < 5_000_000:
        return Decision(
            "model", "LSTM encoder and decoder, embedding 256, hidden 256, latent 32, dropout 0.3, Adam at 2e-3",
            ("model.embedding_dim=256", "model.hidden_dim=256", "model.latent_dim=32", "model.dropout=0.3",
             "train.learning_rate=0.002"),
            f"{train_tokens:,} training tokens: Li et al. 2019's sizes for PTB, 887k tokens; their dropout 0.5 and "
            "rate 1e-3 learn too slowly for a budget of hours: in 60 minutes on PTB, validation IW-PPL 117.5 "
            "against 128.2, recipes/text/README.md",
        )
    return Decision(
        "model", "LSTM encoder and decoder, embedding 512, hidden 512, latent 32, dropout 0.3",
        ("model.embedding_dim=512", "model.hidden_dim=512", "model.latent_dim=32", "model.dropout=0.3"),
        f"{train_tokens:,} training tokens: wider, as He et al. 2019 for Yahoo and Yelp, about 10M tokens each",
    )

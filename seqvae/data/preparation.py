"""A corpus made ready for training and evaluation: every split tokenized under the run's length
policy, with counts of what the policy did, and the notes a user should read about them."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from seqvae.config import Config
from seqvae.data.batching import EVAL_ROW_TOKENS, EncodedSplit, collate, encode_split, sorted_batches
from seqvae.data.corpus import Corpus
from seqvae.data.tokenizers import PUNCTUATED_SHARE, SPECIALS, punctuated_words
from seqvae.errors import SeqVAEError

LONG_SENTENCE = 1000
"""Without data.max_length, a sentence of more tokens than this is reported (a line that may hold
a whole document)."""


@dataclass
class PreparedData:
    """A corpus tokenized under the run's length policy."""

    tokenizer: Any
    splits: dict[str, EncodedSplit]
    summary: dict[str, dict[str, int]] = field(default_factory=dict)

    def batches(self, split: str, batch_size: int):
        """Evaluation batches of a split: sorted by length, no shuffling, with at most
        ``batch_size * EVAL_ROW_TOKENS`` padded tokens in a batch."""
        sequences = self.splits[split].sequences
        lengths = self.splits[split].lengths
        for indices in sorted_batches(lengths, batch_size=batch_size, max_tokens=batch_size * EVAL_ROW_TOKENS):
            yield collate([sequences[i] for i in indices])


def model_length_limit(model) -> int:
    """The most tokens a sentence may have for a model config (0: no limit). A Transformer with
    learned positions reads at most model.max_positions positions: the encoder the sentence, <eos>
    and perhaps a summary token; the decoder <bos>, the sentence and perhaps a prefix."""
    transformer = "transformer" in (model.encoder, model.decoder)
    return model.max_positions - 2 if transformer and model.positions == "learned" else 0


def max_tokens(config: Config) -> int:
    """The length the policy applies: data.max_length, capped by what the model can read."""
    limits = [limit for limit in (config.data.max_length, model_length_limit(config.model)) if limit]
    return min(limits) if limits else 0


def prepare_data(config: Config, corpus: Corpus, tokenizer) -> PreparedData:
    """Tokenize every split and count what the length policy did. The policy applies at
    data.max_length, or at the model's own limit (a Transformer's positions) when that is lower,
    to every split, so evaluation never meets a sentence the model cannot read."""
    prepared = PreparedData(tokenizer=tokenizer, splits={})
    limit = max_tokens(config)
    for split, sentences in corpus.splits.items():
        encoded = encode_split(tokenizer, sentences, max_length=limit, policy=config.data.length_policy)
        if not encoded.sequences:
            raise SeqVAEError(
                f"{corpus.sources.get(split, split)}: no {split} sentence is left after "
                f"data.length_policy={config.data.length_policy} with a limit of {limit} tokens "
                f"(data.max_length={config.data.max_length}, model limit {model_length_limit(config.model) or 'none'})"
            )
        prepared.splits[split] = encoded
        prepared.summary[split] = {
            "sentences": len(encoded.sequences),
            "tokens_with_eos": encoded.num_tokens,
            "blank_lines_skipped": corpus.blank_lines.get(split, 0),
            "truncated": encoded.truncated,
            "dropped": encoded.dropped,
            "longest_tokens": encoded.longest,
        }
    return prepared


def note_data(config: Config, data: PreparedData, *, new_tokenizer: bool, say: Callable[[str], None]) -> None:
    """Say what a user should know before training on this data: a word vocabulary built from
    untokenized text, and what the length policy truncated or dropped (or, without one, a line that
    may hold a whole document)."""
    tokenizer = data.tokenizer
    if new_tokenizer and tokenizer.kind == "word":
        punctuated = punctuated_words(tokenizer)
        words = tokenizer.vocab_size - len(SPECIALS)
        if punctuated and len(punctuated) >= PUNCTUATED_SHARE * words:
            examples = ", ".join(repr(word) for word in punctuated[:3])
            say(
                f"tokenizer: {len(punctuated)} of the {words} words carry punctuation ({examples}): the word tokenizer "
                "splits on spaces only; tokenize the text first, or use tokenizer.kind=sentencepiece"
            )
    for split, counts in data.summary.items():
        if counts["truncated"] or counts["dropped"] or counts["blank_lines_skipped"]:
            say(
                f"{split}: {counts['blank_lines_skipped']} blank lines skipped, "
                f"{counts['truncated']} truncated, {counts['dropped']} dropped "
                f"(at {max_tokens(config)} tokens: data.max_length={config.data.max_length}, "
                f"model limit {model_length_limit(config.model) or 'none'}; data.length_policy={config.data.length_policy})"
            )
        if not max_tokens(config) and counts["longest_tokens"] > LONG_SENTENCE:
            say(
                f"{split}: the longest sentence has {counts['longest_tokens']} tokens (a line may hold a whole "
                "document); data.max_length with data.length_policy truncates or drops long lines"
            )

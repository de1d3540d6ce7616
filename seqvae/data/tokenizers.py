"""Tokenizers: a word vocabulary and SentencePiece, with the same four special ids.

Both map a sentence to token ids and back, and both reserve ``<pad>`` = 0, ``<unk>`` = 1,
``<bos>`` = 2, ``<eos>`` = 3. After the specials, ids are ordered by frequency in the training
split, most frequent first (the adaptive output layer relies on it): the word vocabulary is built
that way, and a SentencePiece model's own piece ids are renumbered by their training counts. A
literal ``<unk>`` in the text (as in the Mikolov PTB files) maps to the unknown id. A tokenizer is saved into the run directory (``tokenizer.json``, plus
``tokenizer.model`` for SentencePiece) and has a fingerprint that checkpoints record, so a
checkpoint is never paired with another vocabulary.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import tempfile
from collections import Counter
from collections.abc import Iterable
from pathlib import Path
from typing import Protocol

from seqvae.errors import SeqVAEError
from seqvae.files import atomic_write_bytes

PAD, UNK, BOS, EOS = "<pad>", "<unk>", "<bos>", "<eos>"
SPECIALS = (PAD, UNK, BOS, EOS)
PAD_ID, UNK_ID, BOS_ID, EOS_ID = 0, 1, 2, 3

TOKENIZER_FILE = "tokenizer.json"
SENTENCEPIECE_FILE = "tokenizer.model"


class Tokenizer(Protocol):
    """What the rest of seqvae needs from a tokenizer."""

    pad_id: int
    unk_id: int
    bos_id: int
    eos_id: int

    @property
    def vocab_size(self) -> int: ...

    @property
    def fingerprint(self) -> str: ...

    def encode(self, sentence: str) -> list[int]: ...

    def decode(self, ids: Iterable[int]) -> str: ...

    def files(self) -> dict[str, bytes]: ...

    def save(self, directory: Path) -> None: ...


class WordTokenizer:
    """Whitespace-split words; rare words and words beyond ``max_size`` map to ``<unk>``."""

    kind = "word"
    pad_id, unk_id, bos_id, eos_id = PAD_ID, UNK_ID, BOS_ID, EOS_ID

    def __init__(self, tokens: list[str]) -> None:
        if tuple(tokens[: len(SPECIALS)]) != SPECIALS:
            raise ValueError(f"a word vocabulary starts with {SPECIALS}")
        self.tokens = list(tokens)
        self.index = {token: i for i, token in enumerate(self.tokens)}
        # Specials other than <unk> met in the text are ordinary unknown words, never control ids.
        for special in (PAD, BOS, EOS):
            self.index[special] = UNK_ID

    @classmethod
    def build(cls, sentences: Iterable[str], *, min_frequency: int = 1, max_size: int = 0) -> WordTokenizer:
        """Count words in the training sentences; keep those seen ``min_frequency`` times or more,
        most frequent first (ties broken alphabetically), at most ``max_size`` entries in all."""
        counts = Counter(word for sentence in sentences for word in sentence.split())
        for special in SPECIALS:
            counts.pop(special, None)
        words = sorted((w for w, c in counts.items() if c >= min_frequency), key=lambda w: (-counts[w], w))
        if max_size:
            words = words[: max(max_size - len(SPECIALS), 0)]
        return cls(list(SPECIALS) + words)

    @property
    def vocab_size(self) -> int:
        return len(self.tokens)

    @property
    def fingerprint(self) -> str:
        return hashlib.sha256("\n".join(self.tokens).encode("utf-8")).hexdigest()[:16]

    def encode(self, sentence: str) -> list[int]:
        index = self.index
        return [index.get(word, UNK_ID) for word in sentence.split()]

    def decode(self, ids: Iterable[int]) -> str:
        return " ".join(self.tokens[i] for i in ids if i not in (PAD_ID, BOS_ID, EOS_ID))

    def files(self) -> dict[str, bytes]:
        """The files ``save`` writes, by name."""
        return {TOKENIZER_FILE: _json_bytes({"kind": "word", "tokens": self.tokens})}

    def save(self, directory: Path) -> None:
        _save_files(directory, self.files())


class SentencePieceTokenizer:
    """A SentencePiece model (unigram or BPE) trained on the training split."""

    kind = "sentencepiece"
    pad_id, unk_id, bos_id, eos_id = PAD_ID, UNK_ID, BOS_ID, EOS_ID

    def __init__(self, model_proto: bytes, order: list[int] | None = None) -> None:
        """``order[i]`` is the SentencePiece id of seqvae id i (the specials keep theirs); None
        keeps SentencePiece's own numbering (runs saved before ids were frequency-ordered)."""
        import sentencepiece

        self.model_proto = model_proto
        self.processor = sentencepiece.SentencePieceProcessor(model_proto=model_proto)
        size = self.processor.get_piece_size()
        order = list(range(size)) if order is None else list(order)
        if sorted(order) != list(range(size)) or order[: len(SPECIALS)] != list(range(len(SPECIALS))):
            raise ValueError("order must be a permutation of the piece ids that keeps the specials first")
        self.order = order  # seqvae id -> SentencePiece id
        self.index = [0] * size  # SentencePiece id -> seqvae id
        for ours, theirs in enumerate(order):
            self.index[theirs] = ours

    @staticmethod
    def frequency_order(processor, sentences: Iterable[str]) -> list[int]:
        """SentencePiece ids with the specials first, then by descending count of the pieces in
        ``sentences`` (ties, and pieces never used, by SentencePiece's own id)."""
        counts = Counter(piece for sentence in sentences for piece in processor.encode(sentence))
        rest = range(len(SPECIALS), processor.get_piece_size())
        return list(range(len(SPECIALS))) + sorted(rest, key=lambda i: (-counts[i], i))

    @classmethod
    def train(
        cls,
        sentences: list[str],
        *,
        vocab_size: int,
        model_type: str = "unigram",
        character_coverage: float = 1.0,
    ) -> SentencePieceTokenizer:
        """Train on the training sentences; the literal ``<unk>`` is removed from the training text
        because it stands for an unknown word, not for characters to model."""
        import sentencepiece

        text = [" ".join(part for part in s.split(UNK) if part.strip()) for s in sentences]
        with tempfile.TemporaryDirectory() as workdir:
            prefix = os.path.join(workdir, "spm")
            try:
                sentencepiece.SentencePieceTrainer.train(
                    sentence_iterator=iter(text),
                    model_prefix=prefix,
                    vocab_size=vocab_size,
                    model_type=model_type,
                    character_coverage=character_coverage,
                    pad_id=PAD_ID,
                    unk_id=UNK_ID,
                    bos_id=BOS_ID,
                    eos_id=EOS_ID,
                    pad_piece=PAD,
                    unk_piece=UNK,
                    bos_piece=BOS,
                    eos_piece=EOS,
                    minloglevel=2,
                )
            except RuntimeError as error:
                message = str(error).strip().splitlines()[-1]
                raise SeqVAEError(f"tokenizer.vocab_size={vocab_size}: SentencePiece training failed: {message}") from None
            model_proto = Path(prefix + ".model").read_bytes()
        processor = sentencepiece.SentencePieceProcessor(model_proto=model_proto)
        return cls(model_proto, cls.frequency_order(processor, text))

    @property
    def vocab_size(self) -> int:
        return self.processor.get_piece_size()

    @property
    def fingerprint(self) -> str:
        """A hash of the pieces in seqvae id order (the model file also records training paths)."""
        pieces = (self.processor.id_to_piece(i) for i in self.order)
        return hashlib.sha256("\n".join(pieces).encode("utf-8")).hexdigest()[:16]

    def encode(self, sentence: str) -> list[int]:
        index = self.index
        if UNK not in sentence:
            return [index[i] for i in self.processor.encode(sentence)]
        ids: list[int] = []
        for position, part in enumerate(sentence.split(UNK)):
            if position:
                ids.append(UNK_ID)
            if part.strip():
                ids.extend(index[i] for i in self.processor.encode(part.strip()))
        return ids

    def decode(self, ids: Iterable[int]) -> str:
        kept = [i for i in ids if i not in (PAD_ID, BOS_ID, EOS_ID)]
        pieces: list[str] = []
        run: list[int] = []
        for i in kept:  # decode runs of ordinary pieces; keep <unk> visible as a word
            if i == UNK_ID:
                if run:
                    pieces.append(self.processor.decode(run))
                    run = []
                pieces.append(UNK)
            else:
                run.append(self.order[i])
        if run:
            pieces.append(self.processor.decode(run))
        return " ".join(pieces)

    def files(self) -> dict[str, bytes]:
        """The files ``save`` writes, by name (the model first: the JSON names it)."""
        spec = {"kind": "sentencepiece", "model_file": SENTENCEPIECE_FILE, "order": self.order}
        return {SENTENCEPIECE_FILE: self.model_proto, TOKENIZER_FILE: _json_bytes(spec)}

    def save(self, directory: Path) -> None:
        _save_files(directory, self.files())


def _json_bytes(value) -> bytes:
    return (json.dumps(value, ensure_ascii=False, indent=2) + "\n").encode("utf-8")


def _save_files(directory: Path, files: dict[str, bytes]) -> None:
    for name, content in files.items():
        atomic_write_bytes(Path(directory) / name, content)


_ATTACHED_PUNCTUATION = re.compile(r"^\w.*[.,!?;:)\]\"']$|^[(\[\"']\w")
PUNCTUATED_SHARE = 0.2
"""A word vocabulary with at least this share of words that carry punctuation ("function.",
"(see") was built from text that is not tokenized: a note says so (PTB has 1.2%, raw docstrings
35 to 48%)."""


def punctuated_words(tokenizer) -> list[str]:
    """The words of a word vocabulary that carry punctuation at either end, most frequent first."""
    return [word for word in tokenizer.tokens[len(SPECIALS) :] if _ATTACHED_PUNCTUATION.match(word)]


def build_tokenizer(config, train_sentences: list[str]) -> Tokenizer:
    """Build the tokenizer that ``config`` (a TokenizerConfig) names from the training split."""
    if config.kind == "word":
        return WordTokenizer.build(train_sentences, min_frequency=config.min_frequency, max_size=config.max_size)
    if config.kind == "sentencepiece":
        return SentencePieceTokenizer.train(
            train_sentences,
            vocab_size=config.vocab_size,
            model_type=config.model_type,
            character_coverage=config.character_coverage,
        )
    raise ValueError(f"unknown tokenizer kind '{config.kind}'; choices: word, sentencepiece")


def load_tokenizer(directory: str | Path) -> Tokenizer:
    """Load the tokenizer saved in a run directory."""
    path = Path(directory) / TOKENIZER_FILE
    if not path.is_file():
        raise SeqVAEError(f"{path}: tokenizer file not found")
    files = {TOKENIZER_FILE: path.read_bytes()}
    try:
        spec = json.loads(files[TOKENIZER_FILE].decode("utf-8"))
        model_file = spec.get("model_file", SENTENCEPIECE_FILE) if spec.get("kind") == "sentencepiece" else None
    except (UnicodeDecodeError, json.JSONDecodeError, AttributeError):
        raise SeqVAEError(f"{path}: not a seqvae tokenizer file") from None
    if model_file is not None and (Path(directory) / model_file).is_file():
        files[model_file] = (Path(directory) / model_file).read_bytes()
    return tokenizer_from_files(files, Path(directory))


def tokenizer_from_files(files: dict[str, bytes], directory: Path = Path(".")) -> Tokenizer:
    """The tokenizer whose files (``Tokenizer.files()``, or a run directory's) are given by name;
    ``directory`` only names them in errors."""
    path = directory / TOKENIZER_FILE
    try:
        spec = json.loads(files[TOKENIZER_FILE].decode("utf-8"))
        kind = spec["kind"]
    except (UnicodeDecodeError, json.JSONDecodeError, KeyError, TypeError):
        raise SeqVAEError(f"{path}: not a seqvae tokenizer file") from None
    if kind == "word":
        try:
            return WordTokenizer(spec["tokens"])
        except (KeyError, ValueError, TypeError):
            raise SeqVAEError(f"{path}: corrupt word vocabulary") from None
    if kind == "sentencepiece":
        model_file = spec.get("model_file", SENTENCEPIECE_FILE)
        model_path = directory / model_file
        if model_file not in files:
            raise SeqVAEError(f"{model_path}: SentencePiece model not found")
        try:  # no 'order': saved before ids were frequency-ordered, SentencePiece's own ids
            return SentencePieceTokenizer(files[model_file], spec.get("order"))
        except RuntimeError:
            raise SeqVAEError(f"{model_path}: corrupt SentencePiece model") from None
        except (ValueError, TypeError):
            raise SeqVAEError(f"{path}: 'order' is not a permutation of the model's piece ids") from None
    raise SeqVAEError(f"{path}: unknown tokenizer kind '{kind}'")

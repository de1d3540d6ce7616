"""Loading a corpus's splits as lists of sentences.

Two sources: local plain-text files (one sentence per line, read directly; a missing file, a
binary file or an empty corpus is a one-line error naming the file) and a dataset name on the
hub plus its text column, through Hugging Face ``datasets``. Blank lines are skipped and counted; surrounding whitespace is removed.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

from seqvae.errors import SeqVAEError
from seqvae.files import read_utf8_text

SPLITS = ("train", "valid", "test")


@dataclass
class Corpus:
    """Sentences per split, and how many blank lines each split's source had."""

    splits: dict[str, list[str]]
    blank_lines: dict[str, int] = field(default_factory=dict)
    sources: dict[str, str] = field(default_factory=dict)


def _quiet_datasets() -> None:
    import datasets

    datasets.disable_progress_bars()
    datasets.logging.set_verbosity_error()
    logging.getLogger("datasets").setLevel(logging.ERROR)


def _clean(lines, *, lowercase: bool) -> tuple[list[str], int]:
    sentences, blank = [], 0
    for line in lines:
        line = (line or "").lstrip("\ufeff").strip()  # a byte-order mark is not text
        if not line:
            blank += 1
            continue
        sentences.append(line.lower() if lowercase else line)
    return sentences, blank


def text_lines(text: str) -> list[str]:
    """The lines of a text file's content as Python's text mode reads them (universal newlines:
    "\\r\\n" and a lone "\\r" end a line as "\\n" does), without their line ends; a last line
    without an end is a line, an end at the very end of the text starts none."""
    lines = text.replace("\r\n", "\n").replace("\r", "\n").split("\n")
    if lines[-1] == "":
        lines.pop()
    return lines


def load_text_files(paths: dict[str, str], *, lowercase: bool = False) -> Corpus:
    """Load local text files, ``{"train": path, "valid": path, "test": path}`` (test optional).

    Read directly, line by line as ``datasets``' text loader reads them (the same lines, blank
    lines and counts), without importing ``datasets``, which costs a second at each start."""
    files = {split: path for split, path in paths.items() if path}
    corpus = Corpus(splits={}, sources=dict(files))
    for split, path in files.items():
        text = read_utf8_text(path, what=f"{split} file")
        if not text.strip():
            raise SeqVAEError(f"{path}: the {split} file holds no sentences (it is empty or blank)")
        corpus.splits[split], corpus.blank_lines[split] = _clean(text_lines(text), lowercase=lowercase)
    return corpus


def load_hub_dataset(
    name: str,
    *,
    config_name: str = "",
    text_column: str = "text",
    split_names: dict[str, str],
    lowercase: bool = False,
) -> Corpus:
    """Load splits of a Hugging Face dataset (a hub name or a local dataset folder).

    ``split_names`` maps seqvae's split names to the dataset's (``{"valid": "validation"}``);
    a split the dataset lacks is an error for train and valid and skipped for test.
    """
    import datasets

    _quiet_datasets()
    try:
        loaded = datasets.load_dataset(name, config_name or None)
    except Exception as error:  # offline, unknown name, bad files: all reach the user as one line
        first_line = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise SeqVAEError(f"dataset '{name}': could not be loaded: {first_line}") from None
    corpus = Corpus(splits={}, sources={})
    for split, dataset_split in split_names.items():
        if dataset_split not in loaded:
            if split == "test":
                continue
            raise SeqVAEError(
                f"dataset '{name}': no split '{dataset_split}' (data.{split}_split); it has {', '.join(loaded)}"
            )
        part = loaded[dataset_split]
        if text_column not in part.column_names:
            raise SeqVAEError(
                f"dataset '{name}': no column '{text_column}' (data.text_column); "
                f"columns: {', '.join(part.column_names)}"
            )
        sentences, blank = _clean(part[text_column], lowercase=lowercase)
        if not sentences:
            raise SeqVAEError(f"dataset '{name}': split '{dataset_split}' holds no sentences")
        corpus.splits[split] = sentences
        corpus.blank_lines[split] = blank
        corpus.sources[split] = f"{name}[{dataset_split}]"
    return corpus


def load_corpus(config) -> Corpus:
    """Load the corpus a :class:`~seqvae.config.DataConfig` describes; train and valid are required."""
    if config.source == "text":
        for split in ("train", "valid"):
            if not getattr(config, split):
                raise SeqVAEError(f"config key 'data.{split}': no {split} file given")
        paths = {split: getattr(config, split) for split in SPLITS}
        return load_text_files(paths, lowercase=config.lowercase)
    if config.source == "hub":
        if not config.hub_name:
            raise SeqVAEError("config key 'data.hub_name': no dataset name given")
        return load_hub_dataset(
            config.hub_name,
            config_name=config.hub_config,
            text_column=config.text_column,
            split_names={"train": config.train_split, "valid": config.valid_split, "test": config.test_split},
            lowercase=config.lowercase,
        )
    raise ValueError(f"unknown data source '{config.source}'")

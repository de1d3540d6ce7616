"""Odd text input: byte-order marks, CRLF and tabs, standard input, sentences longer than a model
can read, and very long lines."""

import json
import subprocess
import sys

from seqvae.data.corpus import load_text_files
from seqvae.data.tokenizers import load_tokenizer
from seqvae.runs import load_run
from seqvae.training import train

from conftest import tiny_config


def _copy(source, target, transform):
    target.write_bytes(transform(source.read_text(encoding="utf-8")).encode("utf-8"))
    return target


def test_a_byte_order_mark_crlf_and_tabs_do_not_reach_the_vocabulary(tiny_corpus, tmp_path):
    odd = {
        split: _copy(path, tmp_path / f"{split}.txt", lambda text: "\ufeff" + text.replace(" ", " \t ", 3).replace("\n", "\r\n"))
        for split, path in tiny_corpus.items()
    }
    clean = load_text_files({split: str(path) for split, path in tiny_corpus.items()})
    loaded = load_text_files({split: str(path) for split, path in odd.items()})
    assert [s.split() for s in loaded.splits["train"]] == [s.split() for s in clean.splits["train"]]
    config = tiny_config(odd, tmp_path / "run", train={"epochs": 1, "max_steps": 2})
    train(config, progress=False)
    tokens = load_tokenizer(tmp_path / "run").tokens
    assert not any("\ufeff" in token or "\t" in token or "\r" in token for token in tokens)


def test_standard_input_and_pipes_are_read_as_input_files(tiny_corpus, tmp_path):
    config = tiny_config(tiny_corpus, tmp_path / "run", train={"epochs": 1, "max_steps": 2})
    train(config, progress=False)
    sentences = "\ufeffthe coach will win the game .\nthe chef cooked a stew .\n"
    result = subprocess.run(
        [sys.executable, "-m", "seqvae", "reconstruct", str(tmp_path / "run"), "--input", "-"],
        input=sentences, capture_output=True, text=True, timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines()[0] == "the coach will win the game ."  # no mark echoed
    assert result.stdout.count("  -> ") == 2
    piped = subprocess.run(
        ["bash", "-c", f"{sys.executable} -m seqvae reconstruct {tmp_path / 'run'} --input <(printf 'a tourist books the cruise .\\n')"],
        capture_output=True, text=True, timeout=120,
    )
    assert piped.returncode == 0, piped.stderr
    assert piped.stdout.startswith("a tourist books the cruise .")


def test_a_transformer_reads_longer_evaluation_sentences_by_the_length_policy(tiny_corpus, tmp_path):
    long_line = " ".join(["the coach will win the game"] * 6) + " ."
    files = {
        split: _copy(path, tmp_path / f"{split}.txt", lambda text: text + long_line + "\n")
        for split, path in tiny_corpus.items()
    }
    model = {"encoder": "transformer", "decoder": "transformer", "injection": ["prefix"], "num_heads": 2,
             "ff_dim": 32, "max_positions": 20, "pooling": "summary_token"}
    config = tiny_config(files, tmp_path / "run", model=model, train={"epochs": 1})
    result = train(config, progress=False)
    data = json.loads((tmp_path / "run" / "data.json").read_text())
    assert data["test"]["truncated"] >= 1 and data["test"]["longest_tokens"] == 37
    metrics = load_run(tmp_path / "run", device="cpu").evaluate("test", iw_samples=3, prior_samples=2)
    assert metrics["truncated"] >= 1 and result.step > 0
    assert load_run(tmp_path / "run", device="cpu").reconstruct([long_line])  # truncated, not a traceback
    dropped = tiny_config(files, tmp_path / "dropped", model=model, data={"length_policy": "drop"}, train={"epochs": 1})
    train(dropped, progress=False)
    assert json.loads((tmp_path / "dropped" / "data.json").read_text())["valid"]["dropped"] >= 1


def test_very_long_lines_are_reported_without_a_max_length(tiny_corpus, tmp_path):
    files = dict(tiny_corpus)
    files["train"] = _copy(tiny_corpus["train"], tmp_path / "train.txt", lambda text: text + "word " * 1500 + "\n")
    messages = []
    train(tiny_config(files, tmp_path / "run", train={"epochs": 1, "max_steps": 1}), progress=False, echo=messages.append)
    assert any("train: the longest sentence has 1500 tokens" in message for message in messages)


def test_a_word_vocabulary_of_untokenized_text_gets_a_note(tiny_corpus, tmp_path):
    # raw text: a full stop and commas glued to the words, as in "the game." and "coach,"
    def glue(text):
        return "".join(line.replace(" .", ".").replace(" the ", ", the ", 1) + "\n" for line in text.splitlines())

    files = {split: _copy(path, tmp_path / f"{split}.txt", glue) for split, path in tiny_corpus.items()}
    messages = []
    train(tiny_config(files, tmp_path / "raw", train={"epochs": 1, "max_steps": 1}), progress=False, echo=messages.append)
    notes = [message for message in messages if message.startswith("tokenizer: ")]
    assert len(notes) == 1 and "words carry punctuation" in notes[0] and "tokenizer.kind=sentencepiece" in notes[0]
    # the same sentences tokenized (the embedded corpus as it is): no note
    messages.clear()
    train(tiny_config(tiny_corpus, tmp_path / "tokenized", train={"epochs": 1, "max_steps": 1}), progress=False, echo=messages.append)
    assert not any(message.startswith("tokenizer: ") for message in messages)

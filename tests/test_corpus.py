import json

import pytest

from seqvae.config import DataConfig
from seqvae.data.corpus import load_corpus, load_hub_dataset, load_text_files
from seqvae.errors import SeqVAEError


def test_text_files_skip_and_count_blank_lines(tmp_path):
    train = tmp_path / "train.txt"
    train.write_text(" the cat sat \n\n   \nthe dog ran\n", encoding="utf-8")
    valid = tmp_path / "valid.txt"
    valid.write_text("a b\n", encoding="utf-8")
    corpus = load_text_files({"train": str(train), "valid": str(valid), "test": ""})
    assert corpus.splits["train"] == ["the cat sat", "the dog ran"]
    assert corpus.blank_lines == {"train": 2, "valid": 0}
    assert "test" not in corpus.splits


def test_text_files_are_read_as_the_datasets_text_loader_reads_them(tmp_path):
    """The independent reference: ``datasets.load_dataset("text")``, which seqvae used for local
    files before it read them itself. Line ends of every kind, a missing last line end, blank
    and whitespace lines, a byte-order mark, form feeds and Unicode line separators inside lines."""
    import datasets

    texts = [
        "\ufeffone two\r\nthree\rfour\n\n five \n",
        "no last line end",
        "a\x0cb\u2028c\x85d\n\r\n\r\r\ne\n\n",
        "\n\n x \t\n",
    ]
    for index, text in enumerate(texts):
        path = tmp_path / f"f{index}.txt"
        path.write_bytes(text.encode("utf-8"))
        reference = datasets.load_dataset("text", data_files={"train": str(path)}, keep_in_memory=True)["train"]["text"]
        lines = [line.lstrip("\ufeff").strip() for line in reference]
        corpus = load_text_files({"train": str(path)})
        assert corpus.splits["train"] == [line for line in lines if line], text
        assert corpus.blank_lines["train"] == sum(not line for line in lines), text


def test_lowercase_option(tmp_path):
    (tmp_path / "t.txt").write_text("The Cat\n", encoding="utf-8")
    config = DataConfig(train=str(tmp_path / "t.txt"), valid=str(tmp_path / "t.txt"), lowercase=True)
    assert load_corpus(config).splits["valid"] == ["the cat"]


def _local_dataset(tmp_path):
    """A dataset folder in the layout the hub uses, read by the same datasets.load_dataset call."""
    folder = tmp_path / "my_dataset"
    folder.mkdir()
    for split, rows in {"train": ["a b c", "", "d e"], "validation": ["f g"], "test": ["h"]}.items():
        lines = [json.dumps({"sentence": row, "label": 0}) for row in rows]
        (folder / f"{split}.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return folder


def test_hub_loader_reads_a_dataset_and_text_column(tmp_path):
    folder = _local_dataset(tmp_path)
    corpus = load_hub_dataset(
        str(folder), text_column="sentence", split_names={"train": "train", "valid": "validation", "test": "test"}
    )
    assert corpus.splits == {"train": ["a b c", "d e"], "valid": ["f g"], "test": ["h"]}
    assert corpus.blank_lines["train"] == 1


def test_hub_loader_names_missing_column_and_split(tmp_path):
    folder = _local_dataset(tmp_path)
    splits = {"train": "train", "valid": "validation", "test": "test"}
    with pytest.raises(SeqVAEError, match="no column 'text'.*columns: sentence, label"):
        load_hub_dataset(str(folder), text_column="text", split_names=splits)
    with pytest.raises(SeqVAEError, match="no split 'dev'"):
        load_hub_dataset(str(folder), text_column="sentence", split_names={**splits, "valid": "dev"})


def test_unreachable_hub_dataset_is_a_one_line_error(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    # the libraries read the variables when first imported: another test may have imported them
    import datasets.config
    import huggingface_hub.constants

    for module, names in ((datasets.config, ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE")), (huggingface_hub.constants, ("HF_HUB_OFFLINE",))):
        for name in names:
            monkeypatch.setattr(module, name, True)
    with pytest.raises(SeqVAEError, match="dataset 'someone/no-such-dataset-xyz': could not be loaded") as error:
        load_hub_dataset("someone/no-such-dataset-xyz", split_names={"train": "train"})
    assert "\n" not in str(error.value)

"""Bad input: one line naming the file and the problem, non-zero exit, no traceback, nothing lost."""

import hashlib
import os
import subprocess
import sys
from pathlib import Path

import pytest

from seqvae.cli import main
from seqvae.config import config_to_toml

from conftest import tiny_config


def _snapshot(folder: Path) -> dict[str, str]:
    return {
        str(path.relative_to(folder)): hashlib.sha256(path.read_bytes()).hexdigest()
        for path in sorted(folder.rglob("*"))
        if path.is_file()
    }


def _fails_with(capsys, argv, *fragments):
    assert main(argv) == 2
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("seqvae: error: ")
    for fragment in fragments:
        assert fragment in lines[0], lines[0]


def _config_file(tmp_path, corpus, run_dir, **paths):
    config = tiny_config(corpus, run_dir, train={"epochs": 1})
    text = config_to_toml(config)
    for split, path in paths.items():
        text = text.replace(f'{split} = "{corpus[split]}"', f'{split} = "{path}"')
    config_path = tmp_path / "config.toml"
    config_path.write_text(text, encoding="utf-8")
    return config_path


@pytest.fixture(scope="module")
def run_dir(tiny_corpus, tmp_path_factory):
    folder = tmp_path_factory.mktemp("bad")
    config_path = folder / "config.toml"
    config_path.write_text(config_to_toml(tiny_config(tiny_corpus, folder / "run", train={"epochs": 1})))
    assert main(["train", str(config_path), "--no-progress"]) == 0
    return folder / "run"


def test_missing_corpus_file(tiny_corpus, tmp_path, capsys):
    missing = tmp_path / "nowhere.txt"
    config = _config_file(tmp_path, tiny_corpus, tmp_path / "run", train=missing)
    _fails_with(capsys, ["train", str(config)], str(missing), "not found")
    assert not (tmp_path / "run").exists()


def test_empty_corpus(tiny_corpus, tmp_path, capsys):
    empty = tmp_path / "empty.txt"
    empty.write_text("\n  \n\n", encoding="utf-8")
    config = _config_file(tmp_path, tiny_corpus, tmp_path / "run", valid=empty)
    _fails_with(capsys, ["train", str(config)], str(empty), "no sentences")
    assert not (tmp_path / "run").exists()


def test_file_that_is_not_utf8_text(tiny_corpus, tmp_path, capsys):
    latin = tmp_path / "latin1.txt"
    latin.write_bytes("caf\xe9 au lait\n".encode("latin-1"))
    config = _config_file(tmp_path, tiny_corpus, tmp_path / "run", train=latin)
    _fails_with(capsys, ["train", str(config)], str(latin), "not UTF-8")
    binary = tmp_path / "model.bin"
    binary.write_bytes(bytes(range(256)))
    config = _config_file(tmp_path, tiny_corpus, tmp_path / "run", train=binary)
    _fails_with(capsys, ["train", str(config)], str(binary), "not UTF-8")


def test_missing_config_file_and_unknown_key(tmp_path, capsys):
    _fails_with(capsys, ["train", str(tmp_path / "none.toml")], "none.toml", "not found")
    config = tmp_path / "c.toml"
    config.write_text("[train]\nepochz = 3\n")
    _fails_with(capsys, ["train", str(config)], "unknown key 'train.epochz'", "epochs")


def test_existing_run_directory_is_refused_and_untouched(run_dir, capsys):
    before = _snapshot(run_dir)
    _fails_with(capsys, ["train", str(run_dir / "config.toml"), "--no-progress"], str(run_dir), "--resume", "--overwrite")
    assert _snapshot(run_dir) == before


def test_overwrite_refuses_a_folder_that_is_not_a_run(tiny_corpus, tmp_path, capsys):
    precious = tmp_path / "precious"
    precious.mkdir()
    (precious / "thesis.tex").write_text("years of work")
    config = _config_file(tmp_path, tiny_corpus, precious)
    _fails_with(capsys, ["train", str(config), "--overwrite"], str(precious), "not a seqvae run directory")
    assert (precious / "thesis.tex").read_text() == "years of work"


def test_bad_corpus_with_overwrite_keeps_the_old_run(tiny_corpus, run_dir, tmp_path, capsys):
    before = _snapshot(run_dir)
    config = _config_file(tmp_path, tiny_corpus, run_dir, train=tmp_path / "missing.txt")
    _fails_with(capsys, ["train", str(config), "--overwrite"], "missing.txt", "not found")
    assert _snapshot(run_dir) == before


def test_truncated_checkpoint(run_dir, tmp_path, capsys):
    copy = tmp_path / "run"
    copy.mkdir()
    for path in run_dir.rglob("*"):
        if path.is_file():
            target = copy / path.relative_to(run_dir)
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(path.read_bytes())
    checkpoint = copy / "checkpoints" / "best.pt"
    data = checkpoint.read_bytes()
    checkpoint.write_bytes(data[: len(data) // 2])
    _fails_with(capsys, ["eval", str(copy)], str(checkpoint), "truncated or corrupt")
    checkpoint.write_bytes(b"garbage" * 100)
    _fails_with(capsys, ["sample", str(copy), "-n", "2"], str(checkpoint), "truncated or corrupt")


def test_checkpoint_from_another_vocabulary(tiny_corpus, run_dir, tmp_path, capsys):
    other_corpus = tmp_path / "other.txt"
    other_corpus.write_text("completely different words here\nand more words\n")
    config = _config_file(tmp_path, tiny_corpus, tmp_path / "other", train=other_corpus)
    assert main(["train", str(config), "--no-progress"]) == 0
    capsys.readouterr()
    foreign = run_dir / "checkpoints" / "best.pt"
    target = tmp_path / "other" / "checkpoints" / "best.pt"
    target.write_bytes(foreign.read_bytes())
    _fails_with(capsys, ["eval", str(tmp_path / "other")], str(target), "another vocabulary")


def test_resume_without_checkpoint_and_missing_run_dir(tiny_corpus, tmp_path, capsys):
    config = _config_file(tmp_path, tiny_corpus, tmp_path / "fresh")
    _fails_with(capsys, ["train", str(config), "--resume"], "nothing to resume")
    _fails_with(capsys, ["eval", str(tmp_path / "nowhere")], "nowhere", "not found")


def test_command_line_shows_no_traceback(tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    result = subprocess.run(
        [sys.executable, "-m", "seqvae.cli", "eval", str(tmp_path / "no-run")],
        capture_output=True, text=True, env=env,
    )
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [f"seqvae: error: {tmp_path / 'no-run'}: run directory not found"]

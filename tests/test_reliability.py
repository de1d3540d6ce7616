"""Reliability when the machine, not the user, misbehaves: a full disk, a read-only run, odd paths,
a process killed inside a checkpoint save, damaged or edited run files, resource extremes, and
readers beside a running training. Each fault is provoked for real (a file-size limit of the
operating system, permissions, a SIGKILL); the promises are in docs/reliability.md."""

from __future__ import annotations

import contextlib
import hashlib
import os
import resource
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from seqvae.cli import main
from seqvae.config import config_to_toml

from conftest import THREADS, metrics, tiny_config


def _snapshot(folder: Path) -> dict[str, str]:
    return {str(path.relative_to(folder)): hashlib.sha256(path.read_bytes()).hexdigest()
            for path in sorted(folder.rglob("*")) if path.is_file()}


def _one_line_error(capsys, code: int, argv: list[str], *fragments: str) -> str:
    """The command exits with ``code`` and its last line on stderr is the one error line (a
    training's progress lines come before it), with no traceback."""
    assert main(argv) == code
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert lines[-1].startswith("seqvae: error: ") and err.count("seqvae: error: ") == 1 and "Traceback" not in err, lines
    for fragment in fragments:
        assert fragment in lines[-1], lines[-1]
    return lines[-1]


@pytest.fixture
def run(tiny_corpus, tmp_path):
    """A finished one-epoch run and its config file (train.epochs=2 resumes it for one more)."""
    config = tmp_path / "config.toml"
    config.write_text(config_to_toml(tiny_config(tiny_corpus, tmp_path / "run", train={"epochs": 1, "validation": "elbo"})))
    assert main(["train", str(config), "--no-progress"]) == 0
    return tmp_path / "run"


@contextlib.contextmanager
def _file_size_limit(size: int):
    """Writes past ``size`` bytes fail with EFBIG in this process, as on a full disk."""
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    previous = signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, (size, hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
        signal.signal(signal.SIGXFSZ, previous)


def test_a_full_disk_while_checkpointing_stops_in_one_line_and_the_run_resumes(run, capsys):
    checkpoints = _snapshot(run / "checkpoints")
    with _file_size_limit(100_000):  # smaller than a checkpoint
        line = _one_line_error(capsys, 1, ["train", str(run / "config.toml"), "--resume", "train.epochs=2", "--no-progress"],
                               "checkpoints/", "could not write it (File too large)", "--resume")
    assert "nothing was replaced" in line
    assert _snapshot(run / "checkpoints") == checkpoints  # the last good checkpoints, whole; no temporary left
    assert main(["train", str(run / "config.toml"), "--resume", "train.epochs=2", "--no-progress"]) == 0
    assert torch.load(run / "checkpoints" / "last.pt", weights_only=True)["epoch"] == 2
    capsys.readouterr()
    with _file_size_limit(50):  # an output file, a report plot, the codes of encode
        _one_line_error(capsys, 1, ["sample", str(run), "-n", "20", "--output", str(run.parent / "s.jsonl")], "s.jsonl: could not write it")
        _one_line_error(capsys, 1, ["report", str(run)], "training.png: could not write it")
        _one_line_error(capsys, 1, ["encode", str(run), "--input", str(run.parent / "config.toml"), "--output", str(run.parent / "c.npz")],
                        "c.npz: could not write it")
    assert not (run.parent / "s.jsonl").exists() and not (run.parent / "c.npz").exists()
    assert not list(run.parent.rglob(".*.tmp"))


def _unprivileged() -> list[str]:
    """A prefix that runs a command without root's right to write anywhere: as root, in a user
    namespace of its own (where it is nobody); otherwise nothing."""
    return ["unshare", "--user"] if os.geteuid() == 0 else []


def test_a_read_only_run_is_read_by_every_reader_and_training_refuses_in_one_line(run, tmp_path):
    shutil.rmtree(run / "eval", ignore_errors=True)
    before = _snapshot(run)
    for path in [run, *run.rglob("*")]:
        path.chmod(path.stat().st_mode & ~0o222)
    env = {**os.environ, "OMP_NUM_THREADS": str(THREADS)}
    try:
        seqvae = [*_unprivileged(), sys.executable, "-m", "seqvae"]
        evaluated = subprocess.run([*seqvae, "eval", str(run), "--iw-samples", "2", "--prior-samples", "0"],
                                   capture_output=True, text=True, env=env, timeout=300)
        trained = subprocess.run([*seqvae, "train", str(run / "config.toml"), "--resume", "train.epochs=2", "--no-progress"],
                                 capture_output=True, text=True, env=env, timeout=300)
    finally:
        for path in [run, *run.rglob("*")]:
            path.chmod(path.stat().st_mode | 0o200)
    assert evaluated.returncode == 0, evaluated.stderr
    assert "nll_iw" in evaluated.stdout and "Traceback" not in evaluated.stderr
    assert "note: the figures were not kept for the report" in evaluated.stderr and "Permission denied" in evaluated.stderr
    assert trained.returncode == 1 and "Traceback" not in trained.stderr
    assert trained.stderr.strip().splitlines()[-1].startswith("seqvae: error: ") and "Permission denied" in trained.stderr
    assert _snapshot(run) == before


def test_paths_with_spaces_non_ascii_and_a_symlink(tiny_corpus, tmp_path):
    real = tmp_path / "mes données"
    real.mkdir()
    (tmp_path / "link").symlink_to(real, target_is_directory=True)
    config = tmp_path / "config.toml"
    config.write_text(config_to_toml(tiny_config(tiny_corpus, tmp_path / "link" / "run ü", train={"epochs": 1, "validation": "elbo"})))
    assert main(["train", str(config), "--no-progress"]) == 0
    assert main(["train", str(real / "run ü" / "config.toml"), "--resume", "train.epochs=2", "--no-progress",
                 f"run.dir={real / 'run ü'}"]) == 0
    assert main(["sample", str(tmp_path / "link" / "run ü"), "-n", "2", "--output", str(real / "échantillons 1.jsonl")]) == 0
    assert len((real / "échantillons 1.jsonl").read_text(encoding="utf-8").splitlines()) == 2
    from seqvae.locks import lock_path

    assert lock_path(tmp_path / "link" / "run ü") == lock_path(real / "run ü")  # one lock, whichever path is used


KILL_AT_RENAME = """
import os, runpy, sys
from pathlib import Path

real_replace = os.replace
def replace(source, target, *args, **kwargs):  # the process dies inside the second save of last.pt
    if Path(target).name == "last.pt" and Path(target).exists():
        os.kill(os.getpid(), 9)
    return real_replace(source, target, *args, **kwargs)
os.replace = replace
sys.argv = ["seqvae", *sys.argv[1:]]
runpy.run_module("seqvae", run_name="__main__")
"""


def test_a_process_killed_inside_a_checkpoint_save_leaves_the_previous_one_and_resumes(run, tmp_path):
    saved = _snapshot(run / "checkpoints")
    script = tmp_path / "killed.py"
    script.write_text(KILL_AT_RENAME)
    killed = subprocess.run([sys.executable, str(script), "train", str(run / "config.toml"), "--resume", "train.epochs=3", "--no-progress"],
                            capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": str(THREADS)}, timeout=300)
    assert killed.returncode == -9
    assert (run / "checkpoints" / ".last.pt.tmp").is_file()  # written whole, never renamed
    assert _snapshot(run / "checkpoints")["last.pt"] == saved["last.pt"]
    assert main(["train", str(run / "config.toml"), "--resume", "train.epochs=3", "--no-progress"]) == 0
    assert torch.load(run / "checkpoints" / "last.pt", weights_only=True)["epoch"] == 3


def test_a_torn_last_metrics_line_is_dropped_by_report_and_resume(run, capsys):
    with open(run / "metrics.jsonl", "a", encoding="utf-8") as handle:
        handle.write('{"split": "train", "step": 99, "lo')
    assert main(["report", str(run)]) == 0
    assert main(["train", str(run / "config.toml"), "--resume", "train.epochs=2", "--no-progress"]) == 0
    text = (run / "metrics.jsonl").read_text()
    assert text.endswith("\n") and '"step": 99' not in text and max(record["step"] for record in metrics(run)) == 38
    capsys.readouterr()
    with open(run / "metrics.jsonl", "a", encoding="utf-8") as handle:  # a damaged line that is not the last
        handle.write("not json\n{}\n")
    _one_line_error(capsys, 2, ["report", str(run)], "metrics.jsonl:", "not a metrics record")


def test_a_hand_edited_config_is_refused_naming_the_key_or_taken(run, capsys):
    config = run / "config.toml"
    original = config.read_text()
    config.write_text(original.replace("hidden_dim = 24", "hidden_dim = 32"))
    _one_line_error(capsys, 2, ["train", str(config), "--resume", "--no-progress"],
                    "cannot resume with model.hidden_dim=32", "last.pt was trained with 24")
    config.write_text(original.replace("epochs = 1", "epochs = 2"))  # a change a run may make
    assert main(["train", str(config), "--resume", "--no-progress"]) == 0
    assert torch.load(run / "checkpoints" / "last.pt", weights_only=True)["epoch"] == 2


def test_a_checkpoint_of_another_release_names_both_versions(run, capsys):
    from seqvae import __version__

    last = run / "checkpoints" / "last.pt"
    payload = torch.load(last, weights_only=True)
    assert payload["seqvae_version"] == __version__
    torch.save({**payload, "format": "seqvae-checkpoint-7", "seqvae_version": "9.0.0"}, last)
    _one_line_error(capsys, 2, ["train", str(run / "config.toml"), "--resume", "--no-progress"],
                    "written by seqvae 9.0.0 in seqvae-checkpoint-7", f"this seqvae {__version__} reads seqvae-checkpoint-1")
    torch.save({key: value for key, value in payload.items() if key != "window"}, last)  # an entry this release needs
    _one_line_error(capsys, 2, ["train", str(run / "config.toml"), "--resume", "train.epochs=2", "--no-progress"],
                    "has no 'window' entry", f"written by seqvae {__version__}")


def test_missing_run_files_are_named(run, capsys):
    shutil.move(run / "checkpoints" / "last.pt", run / "last.pt")
    _one_line_error(capsys, 2, ["train", str(run / "config.toml"), "--resume", "--no-progress"],
                    "nothing to resume (no checkpoints/last.pt)", "best.pt is there", "train.init_from=")
    shutil.move(run / "last.pt", run / "checkpoints" / "last.pt")
    (run / "tokenizer.json").unlink()
    _one_line_error(capsys, 2, ["sample", str(run), "-n", "1"], "tokenizer.json: tokenizer file not found")


def test_non_finite_config_values_are_refused(tiny_corpus, tmp_path, capsys):
    config = tmp_path / "config.toml"
    config.write_text(config_to_toml(tiny_config(tiny_corpus, tmp_path / "run")))
    for override in ("train.learning_rate=nan", "objective.free_bits_lambda=inf", "annealing.beta=-inf"):
        _one_line_error(capsys, 2, ["train", str(config), override], f"'{override.split('=')[0]}'", "not a finite number")
    assert not (tmp_path / "run").exists()


def test_a_line_too_long_for_memory_is_refused_before_allocating(tiny_corpus, tmp_path, capsys, monkeypatch):
    from seqvae.training import memory

    train = tmp_path / "train.txt"
    train.write_text(tiny_corpus["train"].read_text() + "x" * 3_000_000 + "\n" + " ".join(["y"] * 200_000) + "\n")
    config = tmp_path / "config.toml"
    config.write_text(config_to_toml(tiny_config({**tiny_corpus, "train": train}, tmp_path / "run")))
    monkeypatch.setattr(memory, "available_bytes", lambda device: 2 * 2**30)  # the machine: 2 GiB free
    _one_line_error(capsys, 2, ["train", str(config), "--no-progress"], "data.max_length: training would need about",
                    "more than the 2.0 GiB free", "200000 tokens")
    assert not (tmp_path / "run").exists()
    # two million word types in sentences of 20 tokens: the vocabulary is the fix
    with pytest.raises(Exception, match="tokenizer.max_size: training would need"):
        memory.check_memory(tiny_config(tiny_corpus, tmp_path / "r"), 2_000_000, {"train": 20}, torch.device("cpu"))


def test_control_characters_one_sentence_and_a_batch_larger_than_the_split(tiny_corpus, tmp_path, capsys):
    binary = tmp_path / "binary.txt"
    binary.write_bytes(b"the bell rings .\nthe \x00 nul .\n")
    config = tmp_path / "binary.toml"
    config.write_text(config_to_toml(tiny_config({**tiny_corpus, "train": binary}, tmp_path / "refused")))
    _one_line_error(capsys, 2, ["train", str(config), "--no-progress"], "binary.txt: not UTF-8 text (it contains NUL bytes")
    assert not (tmp_path / "refused").exists()
    train = tmp_path / "train.txt"
    train.write_text("the bell \x07 rings \x1b[31m red \x0c here .\n", encoding="utf-8")
    config = tmp_path / "config.toml"
    config.write_text(config_to_toml(tiny_config({**tiny_corpus, "train": train}, tmp_path / "run",
                                                 train={"epochs": 2, "batch_size": 16, "validation": "elbo"})))
    assert main(["train", str(config), "--no-progress"]) == 0
    assert torch.load(tmp_path / "run" / "checkpoints" / "last.pt", weights_only=True)["step"] == 2


def test_readers_beside_a_training_do_not_take_its_lock(run, capsys):
    from seqvae.locks import lock_path, run_directory_lock

    with run_directory_lock(run):  # as a training holds it
        held = lock_path(run).read_text()
        assert main(["sample", str(run), "-n", "2"]) == 0
        assert main(["eval", str(run), "--iw-samples", "2", "--prior-samples", "0"]) == 0
        assert main(["report", str(run)]) == 0
        assert lock_path(run).read_text() == held
    assert "another training" not in capsys.readouterr().err


@pytest.fixture
def sigint_raises():
    """SIGINT as a terminal delivers it: a shell that starts a job in the background without job
    control (`nohup ... &`, as a background CI run is started) leaves the job ignoring SIGINT, and
    Python then raises no KeyboardInterrupt. The test below is about the commands, not that."""
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    yield
    signal.signal(signal.SIGINT, previous)


@pytest.mark.parametrize("moment", ["working", "writing"])
@pytest.mark.parametrize("command", ["sample", "encode"])
def test_an_interrupt_while_writing_an_output_leaves_no_file(run, tmp_path, capsys, monkeypatch, sigint_raises, command, moment):
    """A real SIGINT (sent to this process and taken by the command's own handler) in the middle of
    a sample or encode, or half-way through writing its output: exit 130, and no output file (nor a
    temporary one) that could pass for a complete one. The signal is sent from inside the work or
    the writer, not from a timer, so that it lands at the same moment however fast the machine is."""
    import seqvae.files
    import seqvae.runs

    many = tmp_path / "many.txt"
    many.write_text((run / "config.toml").read_text().replace("=", " ") * 400)
    output = tmp_path / ("out.jsonl" if command == "sample" else "out.npz")
    argv = (["sample", str(run), "-n", "2000", "--strategy", "sample", "--output", str(output)] if command == "sample"
            else ["encode", str(run), "--input", str(many), "--output", str(output)])
    sent = []

    def interrupt():
        sent.append(True)
        os.kill(os.getpid(), signal.SIGINT)

    if moment == "working":
        original = getattr(seqvae.runs.Run, "generate" if command == "sample" else "encode")

        def working(self, *args, **kwargs):
            result = original(self, *args, **kwargs)
            interrupt()  # the work is done; the interrupt arrives before anything is written
            return result

        monkeypatch.setattr(seqvae.runs.Run, "generate" if command == "sample" else "encode", working)
    else:
        original_write = seqvae.files._Recorded.write

        def writing(self, data):
            written = original_write(self, data)
            if not sent:
                interrupt()  # part of the file is in the temporary file
            return written

        monkeypatch.setattr(seqvae.files._Recorded, "write", writing)
    assert main(argv) == 130
    assert sent
    assert capsys.readouterr().err.strip().splitlines()[-1] == "seqvae: interrupted"
    assert not output.exists() and not list(tmp_path.glob(".out*"))

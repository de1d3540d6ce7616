"""Faults during training: divergence, interrupts, two trainings into one run directory, budgets."""

import json
import os
import pickle
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from seqvae.config import config_to_toml
from seqvae.errors import SeqVAEError
from seqvae.locks import lock_path, run_directory_lock
from seqvae.errors import TrainingInterrupted
from seqvae.training import load_trained_model, train
from seqvae.training.trainer import Trainer

from conftest import metrics, tiny_config

REPO = Path(__file__).resolve().parents[1]


def _weights(run_dir, name="last"):
    return torch.load(run_dir / "checkpoints" / f"{name}.pt", weights_only=True)


def test_divergence_stops_with_a_one_line_error_and_keeps_the_last_good_checkpoint(tiny_corpus, tmp_path):
    config = tiny_config(tiny_corpus, tmp_path / "run", train={"learning_rate": 1e30, "checkpoint_every": 2, "grad_clip": 0.0})
    with pytest.raises(SeqVAEError, match=r"training diverged at step \d+ .*lower train.learning_rate") as caught:
        train(config, progress=False)
    assert "\n" not in str(caught.value)
    for name in ("last", "best"):
        path = tmp_path / "run" / "checkpoints" / f"{name}.pt"
        if path.is_file():
            assert all(torch.isfinite(t).all() for t in _weights(tmp_path / "run", name)["model"].values() if t.is_floating_point())


def test_divergence_through_the_cli_exits_non_zero_without_a_traceback(tiny_corpus, tmp_path):
    config = tmp_path / "c.toml"
    config.write_text(config_to_toml(tiny_config(tiny_corpus, tmp_path / "run", train={"learning_rate": 1e30, "grad_clip": 0.0})))
    result = subprocess.run(
        [sys.executable, "-m", "seqvae", "train", str(config), "--no-progress"], capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 2 and "training diverged at step" in result.stderr
    assert "Traceback" not in result.stderr and len(result.stderr.strip().splitlines()) == 1


def _train_in_background(config_path: Path, *extra: str) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "seqvae", "train", str(config_path), "--no-progress", *extra],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"},
    )


def _wait_for_steps(run_dir: Path, steps: int, process: subprocess.Popen, timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    metrics = run_dir / "metrics.jsonl"
    while time.monotonic() < deadline:
        assert process.poll() is None, process.communicate()
        if metrics.is_file() and any(json.loads(line)["step"] >= steps for line in metrics.read_text().splitlines() if line):
            return
        time.sleep(0.05)
    process.kill()
    raise AssertionError("training did not reach the step in time")


@pytest.mark.parametrize("signal_number", [signal.SIGINT, signal.SIGTERM])
def test_an_interrupt_saves_a_checkpoint_and_the_resumed_run_equals_an_uninterrupted_one(tiny_corpus, tmp_path, signal_number):
    settings = {"train": {"epochs": 4, "log_every": 1}}
    whole = tiny_config(tiny_corpus, tmp_path / "whole", **settings)
    train(whole, progress=False)
    config_path = tmp_path / "c.toml"
    config_path.write_text(config_to_toml(tiny_config(tiny_corpus, tmp_path / "parts", **settings)))
    process = _train_in_background(config_path)
    _wait_for_steps(tmp_path / "parts", 5, process)
    process.send_signal(signal_number)
    _, stderr = process.communicate(timeout=120)
    assert process.returncode == 130, stderr
    assert "training stopped at step" in stderr and "--resume" in stderr and "Traceback" not in stderr
    stopped_at = _weights(tmp_path / "parts")["step"]
    assert 0 < stopped_at < 4 * 19
    resumed = subprocess.run(
        [sys.executable, "-m", "seqvae", "train", str(config_path), "--resume", "--no-progress"],
        capture_output=True, text=True, timeout=300,
    )
    assert resumed.returncode == 0, resumed.stderr
    for key, value in _weights(tmp_path / "whole")["model"].items():
        assert torch.equal(value, _weights(tmp_path / "parts")["model"][key]), key


def test_an_interrupt_in_a_validation_stops_it_at_once_and_the_resumed_run_validates_again(tiny_corpus, tmp_path, monkeypatch):
    # a validation may run for minutes (a long line, K = 500): the first Ctrl-C must not wait for it
    settings = {"train": {"epochs": 3, "log_every": 1}}
    train(tiny_config(tiny_corpus, tmp_path / "whole", **settings), progress=False)
    measure = Trainer.measure_validation
    steps = []

    def signalled_in_the_second(trainer, **kwargs):
        steps.append(trainer.state.step)
        if len(steps) == 2:
            torch.rand(3)  # as a validation that draws from the global generator before the signal
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(5)  # the handler runs here and stops the validation
            raise AssertionError("the signal did not stop the validation")
        return measure(trainer, **kwargs)

    monkeypatch.setattr(Trainer, "measure_validation", signalled_in_the_second)
    parts = tiny_config(tiny_corpus, tmp_path / "parts", **settings)
    # Python's own handler, or SIG_IGN when the suite was started in the background by a shell
    before = signal.getsignal(signal.SIGINT)
    with pytest.raises(TrainingInterrupted, match=r"SIGINT: training stopped at step \d+ \(epoch 2\), during its validation \(the resumed run does it again\), and saved") as caught:
        train(parts, progress=False)
    # whole across processes, the command that continues it kept apart for a recipe to replace
    copy = pickle.loads(pickle.dumps(caught.value))
    assert str(copy) == str(caught.value) and copy.stopped == caught.value.stopped and "--resume" not in copy.stopped
    monkeypatch.undo()
    assert signal.getsignal(signal.SIGINT) is before  # the handlers were put back
    assert len(steps) == 2 and _weights(tmp_path / "parts")["step"] == steps[1]  # the step it was validating
    assert [r["epoch"] for r in metrics(tmp_path / "parts") if r["split"] == "valid"] == [1]  # nothing of the second
    train(parts, resume=True, progress=False)
    for key, value in _weights(tmp_path / "whole")["model"].items():
        assert torch.equal(value, _weights(tmp_path / "parts")["model"][key]), key
    assert metrics(tmp_path / "whole") == metrics(tmp_path / "parts")


def test_a_second_training_into_a_locked_run_directory_is_refused(tiny_corpus, tmp_path):
    config = tiny_config(tiny_corpus, tmp_path / "run", train={"epochs": 1})
    with run_directory_lock(tmp_path / "run"):
        with pytest.raises(SeqVAEError, match=f"another training is writing this run directory \\(process {os.getpid()}\\)"):
            train(config, progress=False)
    assert not (tmp_path / "run").exists()  # refused before anything was written
    train(config, progress=False)  # released: the same training now runs


def test_a_lock_left_by_a_killed_process_does_not_block(tiny_corpus, tmp_path):
    holder = subprocess.Popen(
        [sys.executable, "-c", f"from seqvae.locks import run_directory_lock\nimport time\nwith run_directory_lock({str(tmp_path / 'run')!r}):\n    print('held', flush=True)\n    time.sleep(60)"],
        stdout=subprocess.PIPE, text=True,
    )
    assert holder.stdout.readline().strip() == "held"
    with pytest.raises(SeqVAEError, match="another training"):
        train(tiny_config(tiny_corpus, tmp_path / "run", train={"epochs": 1}), progress=False)
    holder.kill()
    holder.wait(timeout=30)
    assert lock_path(tmp_path / "run").is_file()  # the file stays; its lock went with the process
    train(tiny_config(tiny_corpus, tmp_path / "run", train={"epochs": 1}), progress=False)


@pytest.mark.parametrize("where", ["an epoch's end", "mid-epoch"])
def test_resuming_a_run_that_met_its_step_budget_neither_validates_again_nor_rewrites_best(tiny_corpus, tmp_path, where):
    # a recipe resumes each finished stage of its plan; the validation that stopped the run is
    # kept with it, so the resumed run has nothing to measure: validating again at an epoch's
    # end drew z from the next epoch's generator and could "improve" best.pt with the same weights
    per_epoch = train(tiny_config(tiny_corpus, tmp_path / "one", train={"epochs": 1}), progress=False).step
    steps = per_epoch if where == "an epoch's end" else per_epoch // 2
    config = tiny_config(tiny_corpus, tmp_path / "run", train={"epochs": 3, "max_steps": steps})
    train(config, progress=False)
    best, log = (tmp_path / "run" / "checkpoints" / "best.pt").read_bytes(), metrics(tmp_path / "run")
    messages = []
    assert train(config, resume=True, progress=False, echo=messages.append).step == steps
    assert (tmp_path / "run" / "checkpoints" / "best.pt").read_bytes() == best
    assert metrics(tmp_path / "run") == log
    assert f"stopped at train.max_steps={steps} (step {steps})" in messages[-1]


def test_a_run_stopped_by_max_steps_is_validated_and_keeps_best(tiny_corpus, tmp_path):
    messages = []
    train(tiny_config(tiny_corpus, tmp_path / "run", train={"max_steps": 7}), progress=False, echo=messages.append)
    records = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [(r["step"], r["stopped_by"]) for r in records if r["split"] == "valid"] == [(7, "train.max_steps")]
    assert _weights(tmp_path / "run", "best")["step"] == 7
    assert "stopped at train.max_steps=7 (step 7): valid rec" in messages[-1]
    model, _, _ = load_trained_model(tmp_path / "run")
    assert model is not None

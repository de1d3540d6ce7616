"""Shared fixtures: a tiny embedded corpus and tiny configs, so the suite runs in minutes on a CPU.

The suite runs in parallel processes (pytest-xdist, ``-n auto`` in pyproject.toml), each on one
torch thread: the tests' models are small enough that a second thread buys little, while a second
process doubles what the machine does at once. Alone (``-n 0``) a test process
takes two threads, as the suite always did.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch

from seqvae.config import Config, config_from_dict, config_to_dict
from seqvae.data.synthetic import write_corpus

THREADS = 1 if os.environ.get("PYTEST_XDIST_WORKER") else 2
"""torch threads of a test process, of the tests' runs (run.threads), and of the processes the
tests start (OMP_NUM_THREADS, which they inherit): a command whose run chooses its threads itself
(the README walk's, the quickstart recipe's) would otherwise take both cores beside the other
test process, and two processes of two threads each on two cores run several times slower."""
torch.set_num_threads(THREADS)
os.environ["OMP_NUM_THREADS"] = str(THREADS)

LONGEST_FIRST = (
    "test_readme.py::test_every_readme_example_runs_as_written_in_order",
    "test_attributes.py",
    "test_readme.py::test_every_readme_example_with_a_run_of_its_own",
    "test_distributed.py",
)
"""Tests that take longest, started first so that no worker is left with one of them at the end
(measured with ``--durations``: the README walk was a third of the suite). pytest-xdist hands
each worker its first tests as a run of consecutive ones, two with ``--maxschedchunk=2``
(pyproject.toml), so the two README chains are not neighbours: each worker starts one."""


def pytest_collection_modifyitems(config, items):
    def rank(item) -> int:
        where = item.nodeid.split("/")[-1]
        return next((index for index, prefix in enumerate(LONGEST_FIRST) if where.startswith(prefix)), len(LONGEST_FIRST))

    items.sort(key=rank)  # stable: the rest keep their order


@pytest.fixture(scope="session")
def tiny_corpus(tmp_path_factory) -> dict[str, Path]:
    """The embedded corpus at 300 / 60 / 60 sentences."""
    directory = tmp_path_factory.mktemp("corpus")
    return write_corpus(directory, seed=1, sizes={"train": 300, "valid": 60, "test": 60})


def tiny_config(corpus: dict[str, Path], run_dir: Path, **sections) -> Config:
    """A model small enough to train a few epochs in seconds; ``sections`` override fields."""
    raw = config_to_dict(Config())
    raw["run"].update(dir=str(run_dir), seed=0, device="cpu", threads=THREADS)  # the same threads whatever the load
    raw["data"].update(train=str(corpus["train"]), valid=str(corpus["valid"]), test=str(corpus["test"]))
    raw["model"].update(embedding_dim=16, hidden_dim=24, latent_dim=4)
    raw["annealing"].update(schedule="linear", warmup_steps=20)
    raw["objective"].update(word_dropout=0.2, free_bits="none", free_bits_lambda=0.0)  # the tests' remedies are explicit
    # fp32 whatever the machine: train.precision = auto would choose by a timed probe (test_precision.py)
    raw["train"].update(epochs=2, batch_size=16, eval_batch_size=32, log_every=5, precision="fp32")
    raw["prior"].update(fit=False)  # fitted after training where a test asks for it (test_fitted_prior.py)
    for name, values in sections.items():
        raw[name].update(values)
    return config_from_dict(raw)


def metrics(run_dir: Path) -> list[dict]:
    """The records of a run's metrics.jsonl."""
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def without_stops(run_dir: Path) -> list[dict]:
    """The records of a run, less the validations where train.max_steps stopped it (a resumed run
    has them where an uninterrupted one has none)."""
    return [record for record in metrics(run_dir) if "stopped_by" not in record]

"""A run stopped by seqvae 0.1.0 resumes under this code exactly as 0.1.0 resumed it.

tests/fixtures/release-0.1.0 holds a tiny run that the release stopped mid-epoch (train.max_steps)
and what the release's own ``--resume`` wrote at the end: its metrics.jsonl and the SHA-256 of
every tensor of last.pt and best.pt (tests/fixtures/make_release_runs.py made them). The run uses
annealing, word dropout, the minimum desired rate, aggressive training and the plateau rule, so
the checkpoint carries the optimizer, scheduler, multiplier and switch states, the position in
the epoch, the partial metric window and the generators.

The resume runs in a child process under the fixtures' pinned environment (one thread, AVX2 code
paths at most), which makes the figures the same on every x86 machine.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

from fixtures.make_release_runs import CORPUS_MARK, OUT, PINNED, tensor_digests


def test_a_release_checkpoint_resumes_bit_exactly(tmp_path):
    shutil.copytree(OUT / "corpus", tmp_path / "corpus")
    shutil.copytree(OUT / "release" / "run", tmp_path / "run")
    config = tmp_path / "run" / "config.toml"
    config.write_text(config.read_text().replace(CORPUS_MARK, str(tmp_path / "corpus")))
    resumed = subprocess.run(
        [sys.executable, "-m", "seqvae", "train", "run/config.toml", "--resume", "--no-progress", "train.max_steps=0"],
        cwd=tmp_path, env={**os.environ, **PINNED}, capture_output=True, text=True,
    )
    assert resumed.returncode == 0, resumed.stderr
    assert "resumed run at step 14 (epoch 2, batch 4)" in resumed.stderr
    expected = OUT / "release" / "expected"
    written = (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(line) for line in written] == [json.loads(line) for line in (expected / "metrics.jsonl").read_text().splitlines()]
    digests = json.loads((expected / "weights.json").read_text())
    for which in ("last", "best"):
        assert tensor_digests(tmp_path / "run" / "checkpoints" / f"{which}.pt") == digests[which], which

"""What ``run.tensorboard = true`` costs a training: the same training with and without the live
curves, in turns, in one process.

What is measured
----------------
One epoch of ``seqvae.training.train`` at the PTB recipe's model sizes (256/256/32; the adaptive
output layer on PTB, the full softmax on the embedded corpus's small vocabulary; batch 32, ``train.log_every`` 50 as the default) on the embedded corpus or PTB's
first ``--train-sentences`` sentences, validated on ``--valid-sentences``. Each repeat trains
twice from the same seed, unwatched and watched, the order alternating between repeats. The
benchmark wraps ``Trainer.validate`` with a timer, so each training's time splits into

- the **steps** (``TrainResult.train_seconds`` less the validation): the watcher adds a clock read
  and a token count per step and about ten scalars per logged window. ``ratio_steps`` = median
  watched / median unwatched; the issue asks for at most 1.02;
- the **validation** at the epoch's end: the watcher adds the per-dimension KL of up to 2,000
  validation sentences and six greedy decodes. ``validation_extra_seconds`` = the medians'
  difference, paid once per validation.

On a shared VM two trainings of the same seed differ by several per cent from run to run, more
than the watcher adds, so the benchmark also times the watcher's own methods inside the watched
training (its per-step count and its per-window scalars, and its validation work):
``watcher_share_of_steps`` is their time over the steps' time, a figure the machine's noise
does not swamp, and ``watcher_validation_seconds`` the validation work's.

The floor is the unwatched training of the same run: the ratios compare two trainings that differ
only in the key. No timing is asserted anywhere; absolute numbers depend on the machine and its load.

Usage (from the repository root)::

    python benchmarks/watching.py                                  # embedded corpus
    python benchmarks/watching.py --data-dir ../shared/data/ptb --json
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import tempfile
import time
from pathlib import Path

import torch

from seqvae.config import Config, config_from_dict, config_to_dict
from seqvae.data.synthetic import write_corpus
from seqvae.precision import cpu_model
from seqvae.training import train
from seqvae.training.trainer import Trainer
from seqvae.training.watching import TensorBoardLog


def corpus_files(args: argparse.Namespace, workdir: Path) -> dict[str, Path]:
    """Training and validation files: PTB's first sentences, or the embedded corpus."""
    if args.data_dir is None:
        return write_corpus(workdir, seed=0, sizes={"train": args.train_sentences, "valid": args.valid_sentences, "test": 10})
    files = {}
    for split, count in (("train", args.train_sentences), ("valid", args.valid_sentences)):
        lines = (Path(args.data_dir) / f"ptb.{split}.txt").read_text(encoding="utf-8").splitlines()[:count]
        files[split] = workdir / f"{split}.txt"
        files[split].write_text("\n".join(lines) + "\n", encoding="utf-8")
    return files


def config_for(files: dict[str, Path], run_dir: Path, *, watched: bool, threads: int, adaptive: bool) -> Config:
    raw = config_to_dict(Config())
    raw["run"].update(dir=str(run_dir), seed=0, device="cpu", threads=threads, tensorboard=watched)
    raw["data"].update(train=str(files["train"]), valid=str(files["valid"]), test="")
    raw["model"].update(embedding_dim=256, hidden_dim=256, latent_dim=32, output_layer="adaptive" if adaptive else "softmax")
    raw["train"].update(epochs=1, batch_size=32, log_every=50)
    raw["prior"].update(fit=False)
    return config_from_dict(raw)


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data-dir", default=None, help="folder holding ptb.train.txt and ptb.valid.txt [embedded corpus]")
    parser.add_argument("--train-sentences", type=int, default=6000)
    parser.add_argument("--valid-sentences", type=int, default=500)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of the summary")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)

    validating = {"seconds": 0.0}
    plain_validate = Trainer.validate

    def timed_validate(self, **kwargs):
        started = time.perf_counter()
        try:
            return plain_validate(self, **kwargs)
        finally:
            validating["seconds"] += time.perf_counter() - started

    Trainer.validate = timed_validate
    inside = {"steps": 0.0, "validation": 0.0}  # time spent in the watcher's own methods

    def timed(method, part):
        def wrapper(*args, **kwargs):
            started = time.perf_counter()
            try:
                return method(*args, **kwargs)
            finally:
                inside[part] += time.perf_counter() - started
        return wrapper

    TensorBoardLog.ended_step = timed(TensorBoardLog.ended_step, "steps")
    TensorBoardLog.window = timed(TensorBoardLog.window, "steps")
    TensorBoardLog.validation = timed(TensorBoardLog.validation, "validation")
    watcher = {"steps": [], "validation": []}
    times = {False: {"steps": [], "validation": []}, True: {"steps": [], "validation": []}}
    with tempfile.TemporaryDirectory() as workdir:
        files = corpus_files(args, Path(workdir))
        for repeat in range(args.repeats):
            for watched in ((False, True) if repeat % 2 == 0 else (True, False)):
                validating["seconds"] = 0.0
                inside.update(steps=0.0, validation=0.0)
                config = config_for(files, Path(workdir) / f"run-{repeat}-{watched}", watched=watched, threads=args.threads,
                                    adaptive=args.data_dir is not None)
                result = train(config, progress=False)
                times[watched]["steps"].append(result.train_seconds - validating["seconds"])
                times[watched]["validation"].append(validating["seconds"])
                steps = result.step
                if watched:
                    watcher["steps"].append(inside["steps"])
                    watcher["validation"].append(inside["validation"])
    median = {watched: {part: statistics.median(values) for part, values in figures.items()} for watched, figures in times.items()}
    figures = {
        "machine": platform.processor() or platform.machine(),
        "cpu": cpu_model(),
        "threads": args.threads,
        "corpus": "PTB" if args.data_dir else "embedded",
        "steps_per_epoch": steps,
        "unwatched_step_ms": 1000 * median[False]["steps"] / steps,
        "watched_step_ms": 1000 * median[True]["steps"] / steps,
        "ratio_steps": median[True]["steps"] / median[False]["steps"],
        "watcher_share_of_steps": statistics.median(watcher["steps"]) / median[True]["steps"],
        "watcher_validation_seconds": statistics.median(watcher["validation"]),
        "unwatched_validation_seconds": median[False]["validation"],
        "validation_extra_seconds": median[True]["validation"] - median[False]["validation"],
        "repeats": {str(watched): values for watched, values in times.items()},
    }
    if args.json:
        print(json.dumps(figures, indent=1))
    else:
        print(f"{figures['cpu']}, {args.threads} thread(s), {figures['corpus']} corpus, {steps} steps per epoch")
        print(f"steps: {figures['unwatched_step_ms']:.1f} ms unwatched, {figures['watched_step_ms']:.1f} ms watched "
              f"(ratio {figures['ratio_steps']:.4f})")
        print(f"the watcher's own work in the steps: {100 * figures['watcher_share_of_steps']:.3f}% of their time")
        print(f"validation: {figures['unwatched_validation_seconds']:.2f} s, watched adds {figures['validation_extra_seconds']:.2f} s "
              f"(the watcher's own work: {figures['watcher_validation_seconds']:.2f} s)")
    return figures


if __name__ == "__main__":
    main()

"""Quickstart recipe: write the embedded corpus, train, then print validation metrics, five prior
samples and one interpolation, and write the run report (RUN/report/: training.png, report.md).

    python recipes/quickstart/run.py [--config FILE] [--overwrite | --resume] [section.key=value ...]

The config is recipes/quickstart/config.toml (LSTM encoder and decoder) unless --config names one
of the other pairings beside it; overrides go to the config, e.g. ``train.epochs=1``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from tqdm.auto import tqdm

from seqvae import SeqVAEError, load_config, load_run, train, write_corpus
from seqvae.allocator import keep_freed_memory
from seqvae.errors import TrainingInterrupted
from seqvae.evaluation import format_metrics
from seqvae.report import save_evaluation, write_report

CONFIG = Path(__file__).with_name("config.toml")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("overrides", nargs="*")
    parser.add_argument("--config", default=str(CONFIG), help="config file (default: the LSTM/LSTM config.toml)")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing run directory")
    parser.add_argument("--resume", action="store_true", help="continue the run from its last checkpoint")
    parser.add_argument("--corpus-size", type=int, default=10000, help="training sentences to generate (the validation and test sets: a tenth as many, 100 to 1,000)")
    args = parser.parse_args(argv)
    keep_freed_memory()  # long loops reuse freed memory instead of faulting in fresh pages
    try:
        config = _load(args)
        result = train(config, resume=args.resume, overwrite=args.overwrite, echo=tqdm.write)
        run = load_run(result.run_dir, device=config.run.device)
        print()
        print(f"trained {result.epoch} epochs ({result.step} steps) in {result.seconds:.0f} s")
        print("validation, best checkpoint:")
        metrics = run.evaluate("valid", progress=True)
        save_evaluation(result.run_dir, "valid", "best", metrics, {"iw_samples": 500, "prior_samples": 100, "seed": 0})
        for line in format_metrics(metrics):
            print(f"  {line}")
        print("\nfive sentences decoded from z ~ N(0, I):")
        for sentence in run.sample(5, seed=config.run.seed):
            print(f"  {sentence}")
        valid = Path(config.data.valid).read_text(encoding="utf-8").splitlines()
        print("\nthree validation sentences and the greedy decoding of their posterior means:")
        for sentence, decoded in zip(valid[2:5], run.reconstruct(valid[2:5])):
            print(f"  {sentence}\n    -> {decoded}")
        first, second = valid[0], valid[1]
        print(f"\ninterpolation between the posterior means of\n  A: {first}\n  B: {second}")
        for t, sentence in run.interpolate(first, second, steps=6):
            print(f"  {t:.1f}  {sentence}")
        paths = write_report(result.run_dir, device=config.run.device)
        print(f"\nrun report: {paths['markdown']} (training curves: {paths['plot']})")
    except TrainingInterrupted as error:
        print(f"quickstart: {error}, or rerun this command with --resume", file=sys.stderr)
        return error.exit_code
    except SeqVAEError as error:
        print(f"quickstart: error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:  # a second Ctrl-C in training, or one in the evaluation and report after it
        print("quickstart: interrupted; rerun this command with --resume to continue from the last checkpoint "
              "(a finished training is evaluated again)", file=sys.stderr)
        return 130
    return 0


def _load(args):
    """Load the config; write the embedded corpus where it points unless it is already there."""
    config = load_config(args.config, args.overrides)
    write_quickstart_corpus(config, corpus_size=args.corpus_size)
    return config


def write_quickstart_corpus(config, *, corpus_size: int = 10000) -> None:
    """The embedded corpus where the config's data paths point, unless it is already there: ``corpus_size``
    training sentences, and a tenth as many (at least 100, at most 1,000) for each of validation and test."""
    corpus_dir = Path(config.data.train).parent
    if not all(Path(path).is_file() for path in (config.data.train, config.data.valid, config.data.test)):
        held_out = min(1000, max(100, corpus_size // 10))
        sizes = {"train": corpus_size, "valid": held_out, "test": held_out}
        write_corpus(corpus_dir, seed=0, sizes=sizes)
        print(f"wrote the embedded corpus to {corpus_dir} ({sizes['train']} training sentences)")


if __name__ == "__main__":
    sys.exit(main())

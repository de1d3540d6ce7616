"""The ``seqvae`` command: argument parsing and printing over the Python API, nothing more.

Bad input ends with one line on stderr (``seqvae: error: ...``) and exit status 2.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from seqvae.errors import SeqVAEError


def _print_metrics(title: str, metrics: dict) -> None:
    from seqvae.evaluation import format_metrics

    print(title)
    for line in format_metrics(metrics):
        print(f"  {line}")


def _command_train(args: argparse.Namespace) -> int:
    from tqdm.auto import tqdm

    from seqvae.config import load_config
    from seqvae.training import train

    overrides = list(args.overrides)
    if args.device:
        overrides.append(f"run.device={args.device}")
    config = load_config(args.config, overrides)
    result = train(
        config,
        resume=args.resume,
        overwrite=args.overwrite,
        progress=not args.no_progress,
        echo=lambda message: tqdm.write(message, file=sys.stderr),
    )
    if result.valid is not None:
        _print_metrics(f"validation after epoch {result.epoch} (step {result.step}):", result.valid)
    print(f"run directory: {result.run_dir}  ({result.seconds:.1f} s)")
    return 0


def _command_eval(args: argparse.Namespace) -> int:
    from seqvae.runs import load_run

    run = load_run(args.run_dir, checkpoint=args.checkpoint, device=args.device)
    if args.iw_samples < 0:
        raise SeqVAEError(f"--iw-samples {args.iw_samples}: use 0 to skip the bound, or a positive K")
    if args.prior_samples == 1 or args.prior_samples < 0:
        raise SeqVAEError(f"--prior-samples {args.prior_samples}: use 0 to skip, or at least 2 (self-BLEU compares samples)")
    metrics = run.evaluate(
        args.split,
        seed=args.seed,
        iw_samples=args.iw_samples,
        mi_group_size=args.mi_group_size,
        prior_samples=args.prior_samples,
        progress=True,
    )
    from seqvae.report import save_evaluation

    settings = {"iw_samples": args.iw_samples, "prior_samples": args.prior_samples, "seed": args.seed}
    if args.mi_group_size:
        settings["mi_group_size"] = args.mi_group_size
    saved = save_evaluation(args.run_dir, args.split, args.checkpoint, metrics, settings)
    if args.json:
        print(json.dumps({"split": args.split, **metrics}))
    else:
        _print_metrics(f"{args.split} ({args.checkpoint} checkpoint of {args.run_dir}):", metrics)
        print(f"saved to {saved}")
    return 0


def _command_report(args: argparse.Namespace) -> int:
    from seqvae.report import write_report

    if args.samples < 0 or args.reconstructions < 0:
        raise SeqVAEError("--samples and --reconstructions must be at least 0")
    if args.steps < 2:
        raise SeqVAEError(f"--steps {args.steps}: an interpolation needs at least 2 steps")
    paths = write_report(
        args.run_dir,
        output_dir=args.output,
        checkpoint=args.checkpoint,
        samples=args.samples,
        reconstructions=args.reconstructions,
        interpolation=tuple(args.between) if args.between else None,
        steps=args.steps,
        seed=args.seed,
        device=args.device,
    )
    print(f"plot: {paths['plot']}")
    print(f"summary: {paths['markdown']}")
    return 0


def _command_sample(args: argparse.Namespace) -> int:
    from seqvae.runs import load_run

    if args.num_samples < 1:
        raise SeqVAEError(f"-n {args.num_samples}: ask for at least one sample")
    run = load_run(args.run_dir, checkpoint=args.checkpoint, device=args.device)
    for sentence in run.sample(args.num_samples, seed=args.seed, max_length=args.max_length):
        print(sentence)
    return 0


def _command_interpolate(args: argparse.Namespace) -> int:
    from seqvae.runs import load_run

    if args.steps < 2:
        raise SeqVAEError(f"--steps {args.steps}: an interpolation needs at least 2 steps")
    run = load_run(args.run_dir, checkpoint=args.checkpoint, device=args.device)
    for t, sentence in run.interpolate(args.first, args.second, steps=args.steps, max_length=args.max_length):
        print(f"{t:.2f}  {sentence}")
    return 0


def _command_corpus(args: argparse.Namespace) -> int:
    from seqvae.data.synthetic import write_corpus

    sizes = {"train": args.train, "valid": args.valid, "test": args.test}
    if min(sizes.values()) < 1:
        raise SeqVAEError("--train, --valid and --test must each be at least 1")
    directory = Path(args.directory)
    existing = [str(directory / f"{split}.txt") for split in sizes if (directory / f"{split}.txt").exists()]
    if existing and not args.overwrite:
        raise SeqVAEError(f"{existing[0]}: exists; pass --overwrite to replace the corpus")
    paths = write_corpus(directory, seed=args.seed, sizes=sizes)
    for split, path in paths.items():
        print(f"{split}: {sizes[split]} sentences -> {path}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="seqvae", description="Sentence variational autoencoders.")
    commands = parser.add_subparsers(dest="command", required=True)

    def run_arguments(command: argparse.ArgumentParser) -> None:
        command.add_argument("run_dir", help="a run directory written by 'seqvae train'")
        command.add_argument("--checkpoint", choices=("best", "last"), default="best")
        command.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")

    train = commands.add_parser("train", help="train a VAE from a TOML config")
    train.add_argument("config", help="TOML config file")
    train.add_argument("overrides", nargs="*", help="section.key=value overrides, e.g. model.latent_dim=32")
    train.add_argument("--resume", action="store_true", help="continue the run from its last checkpoint")
    train.add_argument("--overwrite", action="store_true", help="replace an existing run directory")
    train.add_argument("--device", choices=("auto", "cpu", "cuda"), help="overrides run.device")
    train.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    train.set_defaults(handler=_command_train)

    evaluate = commands.add_parser("eval", help="evaluate a run on a split of its corpus")
    run_arguments(evaluate)
    evaluate.add_argument("--split", default="test", choices=("train", "valid", "test"))
    evaluate.add_argument("--seed", type=int, default=0, help="seed of the z samples")
    evaluate.add_argument("--json", action="store_true", help="print one JSON object")
    evaluate.add_argument("--iw-samples", type=int, default=500, help="K of the importance-weighted bound (0 skips it)")
    evaluate.add_argument(
        "--prior-samples", type=int, default=100, help="prior samples for distinct-n, self-BLEU, log p(x|z) (0 skips)"
    )
    evaluate.add_argument(
        "--mi-group-size", type=int, default=None, help="aggregate posterior over groups of this size (He et al. 2019)"
    )
    evaluate.set_defaults(handler=_command_eval)

    report = commands.add_parser("report", help="plot the training curves and write a Markdown summary of a run")
    run_arguments(report)
    report.add_argument("--output", help="folder for training.png and report.md (default RUN_DIR/report)")
    report.add_argument("--samples", type=int, default=5, help="prior samples to decode")
    report.add_argument("--reconstructions", type=int, default=3, help="validation sentences to reconstruct")
    report.add_argument("--between", nargs=2, metavar=("A", "B"), help="interpolate between these two sentences")
    report.add_argument("--steps", type=int, default=6)
    report.add_argument("--seed", type=int, default=0)
    report.set_defaults(handler=_command_report)

    sample = commands.add_parser("sample", help="decode sentences from prior samples z ~ N(0, I)")
    run_arguments(sample)
    sample.add_argument("-n", "--num-samples", type=int, default=10)
    sample.add_argument("--seed", type=int, default=0)
    sample.add_argument("--max-length", type=int, default=50)
    sample.set_defaults(handler=_command_sample)

    interpolate = commands.add_parser("interpolate", help="decode a linear path between two sentences' codes")
    run_arguments(interpolate)
    interpolate.add_argument("first")
    interpolate.add_argument("second")
    interpolate.add_argument("--steps", type=int, default=5)
    interpolate.add_argument("--max-length", type=int, default=50)
    interpolate.set_defaults(handler=_command_interpolate)

    corpus = commands.add_parser("corpus", help="write the embedded synthetic corpus with attribute labels")
    corpus.add_argument("directory")
    corpus.add_argument("--seed", type=int, default=0)
    corpus.add_argument("--train", type=int, default=10000)
    corpus.add_argument("--valid", type=int, default=1000)
    corpus.add_argument("--test", type=int, default=1000)
    corpus.add_argument("--overwrite", action="store_true")
    corpus.set_defaults(handler=_command_corpus)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.handler(args)
    except SeqVAEError as error:
        print(f"seqvae: error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("seqvae: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())

"""The ``seqvae`` command: argument parsing and printing over the Python API, nothing more.

Bad input ends with one line on stderr (``seqvae: error: ...``) and exit status 2.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
import time
from pathlib import Path

from seqvae.errors import ReportedByRankZero, SeqVAEError, TrainingInterrupted


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
    if args.threads is not None:
        overrides.append(f"run.threads={args.threads}")
    config = load_config(args.config, overrides)
    result = train(
        config,
        resume=args.resume,
        overwrite=args.overwrite,
        progress=not args.no_progress,
        echo=lambda message: tqdm.write(message, file=sys.stderr),
    )
    from seqvae.distributed import leave, process_rank

    leave()  # every rank has finished: the process group ends together
    if process_rank() != 0:  # under torchrun, rank 0 prints
        return 0
    if result.valid is not None:
        _print_metrics(f"validation after epoch {result.epoch} (step {result.step}):", result.valid)
    print(f"run directory: {result.run_dir}  ({result.seconds:.1f} s)")
    return 0


def _load_run(args: argparse.Namespace):
    """The run of a command, with one line on standard error naming the checkpoint it loaded."""
    from seqvae.runs import load_run

    run = load_run(args.run_dir, checkpoint=args.checkpoint, device=args.device)
    print(f"loaded {run.checkpoint}", file=sys.stderr)
    return run


def _eval_judge(args: argparse.Namespace):
    """eval's numeric options checked, and the language model that judges generated text with its
    options (None, None without --lm)."""
    if args.iw_samples < 0:
        raise SeqVAEError(f"--iw-samples {args.iw_samples}: use 0 to skip the bound, or a positive K")
    from seqvae.fitted_prior import check_temperature

    check_temperature(args.prior_temperature, "--prior-temperature")
    if args.prior_samples == 1 or args.prior_samples < 0:
        raise SeqVAEError(f"--prior-samples {args.prior_samples}: use 0 to skip, or at least 2 (self-BLEU compares samples)")
    if args.lm is None:
        return None, None
    if args.lm_samples < 1 or args.reverse_samples < 0 or args.reverse_epochs < 1:
        raise SeqVAEError("--lm-samples and --reverse-epochs must be at least 1, --reverse-samples at least 0")
    if args.reverse_samples and args.reverse_samples < 20:
        raise SeqVAEError(f"--reverse-samples {args.reverse_samples}: train the reverse LM on at least 20 samples, or 0 to skip it")
    from seqvae.judge import load_judge

    judge = load_judge(args.lm, device=args.device)
    return judge, {"samples": args.lm_samples, "reverse_samples": args.reverse_samples, "reverse_epochs": args.reverse_epochs}


def _keep_evaluation(args: argparse.Namespace, judge, judge_options, metrics: dict, loaded: dict):
    """eval's figures saved with the settings that produced them to RUN/eval/ (nothing with
    --no-save): (the file or None, the StorageError of a read-only or full run directory or None)."""
    if args.no_save:
        return None, None
    from seqvae.files import StorageError
    from seqvae.report import save_evaluation

    settings = {"iw_samples": args.iw_samples, "prior_samples": args.prior_samples, "seed": args.seed}
    if args.mi_group_size:
        settings["mi_group_size"] = args.mi_group_size
    if args.prior_temperature != 1:
        settings["prior_temperature"] = args.prior_temperature
    if judge is not None:
        settings.update(lm=str(judge.run_dir), **{f"lm_{key}": value for key, value in judge_options.items()})
    try:
        return save_evaluation(args.run_dir, args.split, args.checkpoint, metrics, {**settings, **loaded}), None
    except StorageError as error:  # the figures are shown all the same
        return None, error


def _command_eval(args: argparse.Namespace) -> int:
    run = _load_run(args)
    judge, judge_options = _eval_judge(args)
    import torch

    started = time.perf_counter()
    metrics = run.evaluate(
        args.split,
        seed=args.seed,
        iw_samples=args.iw_samples,
        mi_group_size=args.mi_group_size,
        prior_samples=args.prior_samples,
        progress=True,
        judge=judge,
        judge_options=judge_options,
        prior_temperature=args.prior_temperature,
    )
    loaded = {
        "checkpoint_file": str(run.checkpoint.path),
        "checkpoint_step": run.checkpoint.step,
        "checkpoint_epochs": run.checkpoint.epoch,
        "eval_seconds": round(time.perf_counter() - started, 1),
        "threads": torch.get_num_threads(),
    }
    saved, unsaved = _keep_evaluation(args, judge, judge_options, metrics, loaded)
    if args.json:
        print(json.dumps({"split": args.split, **loaded, **metrics}))
    else:
        _print_metrics(f"{args.split} ({args.checkpoint} checkpoint of {args.run_dir}):", metrics)
        if saved is not None:
            print(f"saved to {saved}")
    if unsaved is not None:
        print(f"note: the figures were not kept for the report: {unsaved}", file=sys.stderr)
    return 0


def _command_export(args: argparse.Namespace) -> int:
    from seqvae.export import export_run

    out = export_run(args.run_dir, args.out_dir, checkpoint=args.checkpoint, dtype=args.dtype, overwrite=args.overwrite)
    files = sorted(path for path in out.iterdir() if path.is_file())
    size = sum(path.stat().st_size for path in files)
    print(f"exported {args.run_dir} ({args.checkpoint} checkpoint, {args.dtype}) to {out}: "
          f"{', '.join(path.name for path in files)} ({size / 2**20:.1f} MiB)")
    return 0


def _command_push(args: argparse.Namespace) -> int:
    from seqvae.hub import push

    url = push(args.folder, args.repo_id, private=args.private, revision=args.revision, message=args.message)
    print(f"pushed {args.folder} to {args.repo_id}: {url}")
    print(f'load it with: seqvae sample hf://{args.repo_id}{"@" + args.revision if args.revision else ""} -n 5')
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


def _decoding(args: argparse.Namespace):
    from seqvae.generation import Decoding

    try:
        return Decoding(
            strategy=args.strategy,
            temperature=args.temperature,
            top_k=args.top_k,
            top_p=args.top_p,
            beam_size=args.beam_size,
            length_penalty=args.length_penalty,
            max_length=args.max_length,
            min_length=args.min_length,
            forbid_unk=args.no_unk,
        )
    except ValueError as error:
        raise SeqVAEError(str(error).replace("decoding ", "--", 1).replace("_", "-")) from None


def _read_sentences(path: str) -> list[str]:
    from seqvae.files import read_utf8_text

    sentences = [line.strip() for line in read_utf8_text(path, what="input file").splitlines() if line.strip()]
    if not sentences:
        raise SeqVAEError(f"{path}: holds no sentences")
    return sentences


def _note_input(run, sentences: list[str]) -> None:
    """Notes on stderr when input sentences are longer than the model reads (they are truncated),
    or when half or more of a sentence's tokens are unknown to the model (its code then says
    little about the sentence)."""
    overlong, limit = run.overlong(sentences)
    if overlong:
        what = "1 input sentence is" if overlong == 1 else f"{overlong} of {len(sentences)} input sentences are"
        print(f"note: {what} longer than this model reads ({limit} tokens): truncated there", file=sys.stderr)
    mostly_unknown = [s for s, share in zip(sentences, run.unknown_share(sentences)) if share >= 0.5]
    if mostly_unknown and len(sentences) <= 2:
        for sentence in mostly_unknown:
            print(f"note: half or more of the words of '{sentence}' are unknown to this model (they become <unk>)", file=sys.stderr)
    elif mostly_unknown:
        print(
            f"note: in {len(mostly_unknown)} of {len(sentences)} input sentences half or more of the words are unknown "
            "to this model (they become <unk>)",
            file=sys.stderr,
        )


def _check_output(path: str, overwrite: bool, suffixes: tuple[str, ...]) -> Path:
    output = Path(path)
    if output.suffix not in suffixes:
        raise SeqVAEError(f"{path}: the output must end in {' or '.join(suffixes)}")
    if output.exists() and not overwrite:
        raise SeqVAEError(f"{path}: exists; pass --overwrite to replace it")
    if not output.parent.is_dir():
        raise SeqVAEError(f"{path}: the folder {output.parent} does not exist")
    return output


def _command_sample(args: argparse.Namespace) -> int:
    from seqvae.files import atomic_write_text

    if args.num_samples < 1:
        raise SeqVAEError(f"-n {args.num_samples}: ask for at least one sample")
    from seqvae.fitted_prior import check_temperature

    check_temperature(args.prior_temperature, "--prior-temperature")
    decoding = _decoding(args)
    output = _check_output(args.output, args.overwrite, (".jsonl",)) if args.output else None
    run = _load_run(args)
    if run.model.is_language_model and decoding.strategy != "sample" and args.num_samples > 1:
        print(
            f"note: {args.run_dir} is a language model (no z): {decoding.strategy} decoding gives the same sentence "
            "every time; --strategy sample draws different ones",
            file=sys.stderr,
        )
    codes = run.prior(args.num_samples, seed=args.seed, prior=args.prior, temperature=args.prior_temperature)
    generated = run.generate(codes, decoding=decoding, seed=args.seed)
    for item in generated:
        print(f"{item.log_prob_per_token:8.3f}  {item.text}")
    if output is not None:
        records = (
            json.dumps({"text": g.text, "tokens": g.tokens, "log_prob_per_token": round(g.log_prob_per_token, 6)}, ensure_ascii=False)
            for g in generated
        )
        atomic_write_text(output, "".join(record + "\n" for record in records))
        print(f"wrote {len(generated)} samples to {output}", file=sys.stderr)
    return 0


def _command_reconstruct(args: argparse.Namespace) -> int:

    if bool(args.sentences) == bool(args.input):
        raise SeqVAEError("give sentences as arguments or --input FILE (one of the two)")
    sentences = args.sentences or _read_sentences(args.input)
    decoding = _decoding(args)
    run = _load_run(args)
    _note_input(run, sentences)
    decoded = run.reconstruct(sentences, sample_posterior=args.sample_posterior, seed=args.seed, decoding=decoding)
    for sentence, output in zip(sentences, decoded):
        print(f"{sentence}\n  -> {output}")
    return 0


def _command_encode(args: argparse.Namespace) -> int:
    import torch

    from seqvae.files import atomic_write_with

    output = _check_output(args.output, args.overwrite, (".npz", ".pt"))
    sentences = _read_sentences(args.input)
    run = _load_run(args)
    _note_input(run, sentences)
    posterior = run.encode(sentences)
    mean, std = posterior.mean.cpu(), posterior.std.cpu()
    if output.suffix == ".npz":
        import numpy

        atomic_write_with(output, lambda handle: numpy.savez(handle, mean=mean.numpy(), std=std.numpy()))
    else:
        atomic_write_with(output, lambda handle: torch.save({"mean": mean, "std": std}, handle))
    print(f"{len(sentences)} sentences -> {output} (mean and std, {len(sentences)} x {mean.shape[1]})")
    return 0


def _integers(text: str) -> tuple[int, ...]:
    try:
        values = tuple(int(item) for item in text.split(",") if item.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"'{text}': expected comma-separated integers, e.g. 1,4,16") from None
    if not values or min(values) < 1:
        raise argparse.ArgumentTypeError(f"'{text}': expected positive integers, e.g. 1,4,16")
    return values


def _names(text: str) -> tuple[str, ...]:
    values = tuple(item.strip() for item in text.split(",") if item.strip())
    if not values or not set(values) <= {"diagonal", "full"}:
        raise argparse.ArgumentTypeError(f"'{text}': expected diagonal, full or diagonal,full")
    return values


def _command_prior(args: argparse.Namespace) -> int:
    run = _load_run(args)
    mixture = run.fit_prior(components=args.components, covariance=args.covariance, codes=args.codes, seed=args.seed, progress=True)
    fit = mixture.fit
    print(f"mean log-density of the validation set's codes ({fit['codes']}s), nats per code:")
    print(f"  {'N(0, I)':<24} {fit['standard_normal_valid_log_likelihood']:10.3f}")
    for candidate in fit["candidates"]:
        chosen = "  <- kept" if (candidate["components"], candidate["covariance"]) == (mixture.components, mixture.covariance) else ""
        name = f"{candidate['components']} x {candidate['covariance']}"
        print(f"  {name:<24} {candidate['valid_log_likelihood']:10.3f}{chosen}")
    from seqvae.fitted_prior import PRIOR_FILE

    print(f"saved to {run.run_dir / PRIOR_FILE}; sample from it with: seqvae sample {args.run_dir} --prior fitted")
    return 0


def _command_interpolate(args: argparse.Namespace) -> int:

    if args.steps < 2:
        raise SeqVAEError(f"--steps {args.steps}: an interpolation needs at least 2 steps")
    if bool(args.prior) == bool(args.sentences):
        raise SeqVAEError("give two sentences A B, or --prior for two prior samples (one of the two)")
    if args.sentences and len(args.sentences) != 2:
        raise SeqVAEError(f"give exactly two sentences to interpolate between, not {len(args.sentences)}")
    decoding = _decoding(args)
    run = _load_run(args)
    if args.prior:
        start, end = run.prior(2, seed=args.seed, prior=None if args.prior == "default" else args.prior)
        path = run.interpolate_codes(start, end, steps=args.steps, path=args.path, decoding=decoding)
    else:
        _note_input(run, args.sentences)
        path = run.interpolate(*args.sentences, steps=args.steps, path=args.path, decoding=decoding)
    for t, sentence in path:
        print(f"{t:.2f}  {sentence}")
    return 0


def _command_attribute(args: argparse.Namespace) -> int:
    from seqvae.attributes import apply_vector, judge_edits, parse_attribute, transfer
    from seqvae.files import atomic_write_text
    from seqvae.judge import load_judge

    files = {name: getattr(args, name) for name in ("with_file", "without_file", "apply_file")}
    given = [name for name, value in files.items() if value]
    if given and len(given) < 3:
        raise SeqVAEError("pass all of --with, --without and --apply, or none with --attribute NAME=VALUE")
    if not given and not args.attribute:
        raise SeqVAEError("pass --with, --without and --apply files, or --attribute NAME=VALUE on the embedded corpus")
    if sum(path == "-" for path in files.values()) > 1:
        raise SeqVAEError("only one of --with, --without and --apply can read standard input (-)")
    scales = tuple(dict.fromkeys(args.scale))  # in the order given, once each
    target = parse_attribute(args.attribute) if args.attribute else None
    output = _check_output(args.output, args.overwrite, (".jsonl",)) if args.output else None
    sets = {name: _read_sentences(path) for name, path in files.items() if path}
    decoding = _decoding(args)
    run = _load_run(args)
    judge = load_judge(args.lm, device=args.device) if args.lm else None
    cache = not args.no_cache
    if "apply_file" in sets:
        _note_input(run, sets["apply_file"])
    if target is None:
        result = apply_vector(
            run, sets["with_file"], sets["without_file"], sets["apply_file"],
            scales=scales, decoding=decoding, cache=cache, progress=True,
        )
    else:
        result = transfer(
            run, *target, with_attribute=sets.get("with_file"), without_attribute=sets.get("without_file"),
            apply_to=sets.get("apply_file"), scales=scales, limit=args.limit, decoding=decoding, cache=cache, progress=True,
        )
    width = max(len(f"{scale:+g}") for scale in scales)
    shown = len(result.originals) if args.show is None else args.show
    for index, original in enumerate(result.originals[:shown]):
        print(original)
        print(f"  {'0':>{width}}  {result.unchanged[index]}")
        for scale in scales:
            print(f"  {scale:>+{width}g}  {result.outputs[scale][index]}")
    print(
        f"vector norm {result.vector_norm:.3f} ({result.relative_norm:.2f} of the codes' spread); "
        f"{result.sets['with']} sentences with, {result.sets['without']} without, applied to {result.sets['apply']}"
    )
    print(f"BLEU to the input: unchanged codes {result.baseline_bleu_to_input:.1f}; "
          + "; ".join(f"scale {scale:g} {result.bleu_to_input[scale]:.1f}" for scale in scales))
    if judge is not None:
        judge_edits(result, judge)
        print(f"the judge's forward perplexity: inputs {result.inputs_lm_forward_ppl:.2f}; unchanged codes "
              f"{result.baseline_lm_forward_ppl:.2f}; " + "; ".join(f"scale {scale:g} {result.lm_forward_ppl[scale]:.2f}" for scale in scales))
    if target is not None:
        print(f"{args.attribute}, unchanged codes: reached {result.baseline_attribute_rate:.3f}, "
              f"other attributes kept {result.baseline_others_kept:.3f}, transfer rate {result.baseline_rate:.3f}")
        if result.perfect_bleu_to_input is not None:
            print(f"  perfect edits (the corpus's own sentences with {args.attribute}): BLEU to the input "
                  f"{result.perfect_bleu_to_input:.1f}")
        for scale in scales:
            changed = ", ".join(f"{name} {share:.2f}" for name, share in result.changes[scale].items())
            print(f"  scale {scale:g}: reached {result.attribute_rates[scale]:.3f}, other attributes kept "
                  f"{result.others_kept[scale]:.3f}, BLEU to the input {result.bleu_to_input[scale]:.1f}, "
                  f"transfer rate {result.rates[scale]:.3f}; attributes changed from the unchanged decode: {changed}")
    if output is not None:
        records = []
        for index, original in enumerate(result.originals):
            record = {"input": original, "baseline": result.unchanged[index]}
            record["outputs"] = {f"{scale:g}": result.outputs[scale][index] for scale in scales}
            records.append(json.dumps(record, ensure_ascii=False))
        atomic_write_text(output, "\n".join(records) + "\n")
        print(f"wrote {len(records)} sentences to {output}", file=sys.stderr)
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
    from seqvae import __version__

    parser = argparse.ArgumentParser(prog="seqvae", description="Sentence variational autoencoders.")
    parser.add_argument("--version", action="version", version=f"seqvae {__version__}")
    commands = parser.add_subparsers(dest="command", required=True)

    def run_arguments(command: argparse.ArgumentParser) -> None:
        command.add_argument("run_dir", help="a run directory written by 'seqvae train', a folder written by 'seqvae export', "
                             "or hf://OWNER/NAME[@REVISION] on the hub")
        command.add_argument("--checkpoint", choices=("best", "last"), default="best")
        command.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
        command.add_argument("--threads", type=int, default=None, help=THREADS_HELP)

    train = commands.add_parser("train", help="train a VAE from a TOML config")
    train.add_argument("config", help="TOML config file")
    train.add_argument("overrides", nargs="*", help="section.key=value overrides, e.g. model.latent_dim=32")
    train.add_argument("--resume", action="store_true", help="continue the run from its last checkpoint")
    train.add_argument("--overwrite", action="store_true", help="replace an existing run directory")
    train.add_argument("--device", choices=("auto", "cpu", "cuda"), help="overrides run.device")
    train.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    train.add_argument("--threads", type=int, default=None, help=THREADS_HELP + "; overrides run.threads")
    train.set_defaults(handler=_command_train)

    evaluate = commands.add_parser("eval", help="evaluate a run on a split of its corpus")
    run_arguments(evaluate)
    evaluate.add_argument("--split", default="test", choices=("train", "valid", "test"))
    evaluate.add_argument("--seed", type=int, default=0, help="seed of the z samples")
    evaluate.add_argument("--json", action="store_true", help="print one JSON object")
    evaluate.add_argument("--no-save", action="store_true",
                          help="print the figures only: write nothing into the run (or exported folder), not even RUN/eval/")
    evaluate.add_argument("--iw-samples", type=int, default=500, help="K of the importance-weighted bound (0 skips it)")
    evaluate.add_argument(
        "--prior-samples", type=int, default=100, help="prior samples for distinct-n, self-BLEU, log p(x|z) (0 skips)"
    )
    evaluate.add_argument(
        "--mi-group-size", type=int, default=None, help="aggregate posterior over groups of this size (He et al. 2019)"
    )
    evaluate.add_argument(
        "--prior-temperature", type=float, default=1.0, help="the fitted prior's temperature for its bound and samples (N(0, I) stays as it is)"
    )
    judged = evaluate.add_argument_group("judging generated text with a language model (docs/measures.md)")
    judged.add_argument("--lm", metavar="LM_RUN", help="a language-model run (model.latent_dim = 0) on the same corpus")
    judged.add_argument("--lm-samples", type=int, default=1000, help="prior samples whose forward perplexity is taken")
    judged.add_argument("--reverse-samples", type=int, default=10000, help="prior samples the reverse LM is trained on (0 skips it)")
    judged.add_argument("--reverse-epochs", type=int, default=5, help="epochs of the reverse LM")
    evaluate.set_defaults(handler=_command_eval)

    export = commands.add_parser("export", help="write a run's model as a folder to share: safetensors weights, config, "
                                 "tokenizer, prior and a model card")
    export.add_argument("run_dir", help="a run directory written by 'seqvae train'")
    export.add_argument("out_dir", help="the folder to write (load it with load_run or any command that reads a run)")
    export.add_argument("--checkpoint", choices=("best", "last"), default="best")
    export.add_argument("--dtype", choices=("float32", "float16", "bfloat16"), default="float32",
                        help="the weights' type in the file (loaded back into float32)")
    export.add_argument("--overwrite", action="store_true", help="replace an existing folder's files")
    export.set_defaults(handler=_command_export)

    push = commands.add_parser("push", help="upload an exported model folder to the Hugging Face hub (the hub extra)")
    push.add_argument("folder", help="a folder written by 'seqvae export'")
    push.add_argument("repo_id", help="OWNER/NAME of the model repository (created if it does not exist)")
    push.add_argument("--private", action="store_true", help="create the repository private")
    push.add_argument("--revision", help="a branch to push to (created from main if it does not exist)")
    push.add_argument("--message", help="the commit message")
    push.set_defaults(handler=_command_push)

    report = commands.add_parser("report", help="plot the training curves and write a Markdown summary of a run")
    run_arguments(report)
    report.add_argument("--output", help="folder for training.png and report.md (default RUN_DIR/report)")
    report.add_argument("--samples", type=int, default=5, help="prior samples to decode")
    report.add_argument("--reconstructions", type=int, default=3, help="validation sentences to reconstruct")
    report.add_argument("--between", nargs=2, metavar=("A", "B"), help="interpolate between these two sentences")
    report.add_argument("--steps", type=int, default=6)
    report.add_argument("--seed", type=int, default=0)
    report.set_defaults(handler=_command_report)

    def decoding_arguments(command: argparse.ArgumentParser, *, seed_help: str) -> None:
        group = command.add_argument_group("decoding")
        group.add_argument("--strategy", choices=("greedy", "sample", "beam"), default="greedy")
        group.add_argument("--temperature", type=float, default=1.0, help="sampling: softmax temperature")
        group.add_argument("--top-k", type=int, default=0, help="sampling: keep the k most probable tokens (0: all)")
        group.add_argument("--top-p", type=float, default=1.0, help="sampling: nucleus probability mass")
        group.add_argument("--beam-size", type=int, default=5, help="beam: hypotheses per sentence")
        group.add_argument("--length-penalty", type=float, default=0.0, help="beam: rank by log p / length ** this")
        group.add_argument("--max-length", type=int, default=50)
        group.add_argument("--min-length", type=int, default=0)
        group.add_argument(
            "--no-unk", action="store_true", help="never produce <unk> (off by default: the output shows what the model does)"
        )
        command.add_argument("--seed", type=int, default=0, help=seed_help)

    sample = commands.add_parser("sample", help="decode sentences from prior samples (N(0, I) or the fitted prior)")
    run_arguments(sample)
    sample.add_argument(
        "--prior", choices=("standard", "fitted"), default=None,
        help="draw z from N(0, I) or from the run's fitted prior (seqvae prior); default: the config's prior.default",
    )
    sample.add_argument(
        "--prior-temperature", type=float, default=1.0,
        help="scale the prior's spread: below 1, codes nearer its modes (more fluent, less varied); --temperature is the decoder's",
    )
    sample.add_argument("-n", "--num-samples", type=int, default=10)
    sample.add_argument("--output", help="also write the samples as JSON lines (text, tokens, log_prob_per_token)")
    sample.add_argument("--overwrite", action="store_true", help="replace an existing --output file")
    decoding_arguments(sample, seed_help="seed of z and of sampling")
    sample.set_defaults(handler=_command_sample)

    reconstruct = commands.add_parser("reconstruct", help="encode sentences and decode their codes")
    run_arguments(reconstruct)
    reconstruct.add_argument("sentences", nargs="*", help="sentences to reconstruct (or --input)")
    reconstruct.add_argument("--input", help="a text file, one sentence per line")
    reconstruct.add_argument("--sample-posterior", action="store_true", help="decode z ~ q(z|x) instead of its mean")
    decoding_arguments(reconstruct, seed_help="seed of the posterior sample and of sampling")
    reconstruct.set_defaults(handler=_command_reconstruct)

    encode = commands.add_parser("encode", help="posterior means and standard deviations of sentences")
    run_arguments(encode)
    encode.add_argument("--input", required=True, help="a text file, one sentence per line")
    encode.add_argument("--output", required=True, help="FILE.npz (numpy.load) or FILE.pt (torch.load): arrays mean, std (N x Z)")
    encode.add_argument("--overwrite", action="store_true", help="replace an existing output file")
    encode.set_defaults(handler=_command_encode)

    interpolate = commands.add_parser("interpolate", help="decode a path between two sentences' codes or two prior samples")
    run_arguments(interpolate)
    interpolate.add_argument("sentences", nargs="*", metavar="A B", help="the two sentences (or --prior)")
    interpolate.add_argument(
        "--prior", nargs="?", const="default", choices=("default", "standard", "fitted"), default=None,
        help="between two prior samples (--seed): from N(0, I) (standard), the fitted prior (fitted), or without a "
        "value the config's prior.default",
    )
    interpolate.add_argument("--steps", type=int, default=5)
    interpolate.add_argument("--path", choices=("linear", "slerp"), default="linear")
    decoding_arguments(interpolate, seed_help="seed of the prior samples and of sampling")
    interpolate.set_defaults(handler=_command_interpolate)

    prior = commands.add_parser(
        "prior", help="fit a Gaussian mixture to the training set's codes, to sample from (RUN/prior.json)"
    )
    run_arguments(prior)
    prior.add_argument("--components", type=_integers, default=None, help="numbers of components tried, e.g. 1,4,16 (default: prior.components)")
    prior.add_argument("--covariance", type=_names, default=None, help="covariances tried: diagonal,full (default: prior.covariance)")
    prior.add_argument("--codes", choices=("mean", "sample"), default=None, help="fit posterior means or one sample each (default: prior.codes)")
    prior.add_argument("--seed", type=int, default=0, help="seed of the k-means++ seeding (and of the samples with --codes sample)")
    prior.set_defaults(handler=_command_prior)

    attribute = commands.add_parser("attribute", help="add an attribute vector to sentences' codes and decode")
    run_arguments(attribute)
    attribute.add_argument("--with", dest="with_file", help="sentences with the attribute, one per line")
    attribute.add_argument("--without", dest="without_file", help="sentences without it")
    attribute.add_argument("--apply", dest="apply_file", help="sentences to transform")
    attribute.add_argument(
        "--attribute", help="NAME=VALUE of the embedded corpus (e.g. tense=future): sets taken from the run's labelled corpus where no file is given, and the transfer rate reported"
    )
    attribute.add_argument(
        "--scale", type=float, nargs="+", default=[1.0], help="one or more multiples of the vector to add (default 1)"
    )
    attribute.add_argument("--output", help="also write FILE.jsonl: per sentence its input, baseline decode and one output per scale")
    attribute.add_argument("--overwrite", action="store_true", help="replace an existing --output file")
    attribute.add_argument(
        "--no-cache", action="store_true", help="encode the --with/--without sets again instead of reusing the codes kept in RUN/cache"
    )
    attribute.add_argument("--limit", type=int, default=500, help="validation sentences to transform (embedded corpus)")
    attribute.add_argument("--show", type=int, default=None, help="print only the first N transformations")
    attribute.add_argument("--lm", metavar="LM_RUN", help="a language-model run on the same corpus: also report its forward perplexity of the edits")
    decoding_arguments(attribute, seed_help="seed of sampling")
    attribute.set_defaults(handler=_command_attribute)

    corpus = commands.add_parser("corpus", help="write the embedded synthetic corpus with attribute labels")
    corpus.add_argument("directory")
    corpus.add_argument("--seed", type=int, default=0)
    corpus.add_argument("--train", type=int, default=10000)
    corpus.add_argument("--valid", type=int, default=1000)
    corpus.add_argument("--test", type=int, default=1000)
    corpus.add_argument("--overwrite", action="store_true")
    corpus.set_defaults(handler=_command_corpus)
    return parser


def _use_threads(args: argparse.Namespace) -> None:
    """--threads, else the count the run was trained with (results can differ in the last bits
    between counts), else the free CPUs."""
    from seqvae.threads import use_threads

    requested = getattr(args, "threads", None) or 0
    run_dir = getattr(args, "run_dir", None)
    if not requested and run_dir and (Path(run_dir) / "config.toml").is_file():
        from seqvae.run_directory import load_run_config

        requested = load_run_config(run_dir).run.threads
    use_threads(requested)


THREADS_HELP = "CPU threads for torch (default: as the run was trained, else the CPUs not busy at the start)"

OVERRIDE = re.compile(r"^[A-Za-z_]+\.[A-Za-z_]+=")


def parse_arguments(argv: list[str] | None = None) -> argparse.Namespace:
    """The command line; ``train``'s section.key=value overrides may stand anywhere, before or
    after the flags."""
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    if extra:
        if args.command == "train" and all(OVERRIDE.match(item) for item in extra):
            args.overrides = [*args.overrides, *extra]
        else:
            parser.error(f"unrecognized arguments: {' '.join(extra)}")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_arguments(argv)
    from seqvae.allocator import keep_freed_memory

    keep_freed_memory()  # long loops reuse freed memory instead of faulting in fresh pages
    try:
        if getattr(args, "threads", None) is not None and args.threads < 0:
            raise SeqVAEError(f"--threads {args.threads}: use 0 for the automatic choice, or a positive count")
        from seqvae.distributed import process_count

        if args.command != "train" and process_count() > 1:
            raise SeqVAEError(
                f"seqvae {args.command}: only train runs under torchrun (WORLD_SIZE={process_count()}); "
                f"run {args.command} as one process"
            )
        from seqvae.hub import fetch, is_hub_address

        if is_hub_address(getattr(args, "run_dir", None)):  # every command that reads a run: its working folder
            address, args.run_dir = args.run_dir, str(fetch(args.run_dir))
            print(f"{address}: {args.run_dir}", file=sys.stderr)
        if args.command != "train":  # train takes run.threads from its config
            _use_threads(args)
        return args.handler(args)
    except ReportedByRankZero as error:  # rank 0 of a torchrun training prints it
        return error.exit_code
    except TrainingInterrupted as error:
        print(f"seqvae: {error}", file=sys.stderr)
        return error.exit_code
    except SeqVAEError as error:
        print(f"seqvae: error: {error}", file=sys.stderr)
        return error.exit_code
    except KeyboardInterrupt:
        print("seqvae: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # the reader of our output went away (e.g. `seqvae sample ... | head`)
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())  # so that the interpreter's final flush stays quiet
        return 0
    except OSError as error:  # the system refused a read or write that no writer above named itself
        where = f"{error.filename}: " if error.filename else ""
        print(f"seqvae: error: {where}{error.strerror or error}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())

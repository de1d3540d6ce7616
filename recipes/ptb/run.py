"""Penn Treebank recipe: train one row of the PTB table at Li et al. 2019's sizes, then evaluate it.

    python recipes/ptb/run.py --data-dir DIR [--method NAME] [--iw-samples K] [--eval SPLITS]
                              [--overwrite | --resume] [section.key=value ...]

DIR holds the Mikolov split: ptb.train.txt, ptb.valid.txt, ptb.test.txt. Without --method the
recipe trains config.toml (annealing with free bits); each method is config.toml with the few
keys of methods/NAME.toml (whose header gives the paper, the setting and the command) and the
overrides on top. ``ae-fb`` has two stages: the autoencoder (methods/ae.toml) into RUN_DIR-ae,
then the warm-started VAE (methods/ae-fb.toml) into RUN_DIR; --resume continues whichever stage
was interrupted, and the overrides apply to both. ``seqvae-best`` warm-starts its own second stage
(methods/seqvae-best.toml) from the same autoencoder, which the two methods train once;
``seqvae-best-sgd`` warm-starts its own from the autoencoder of the full-softmax ``ae-fb`` row
(``--method ae-fb`` with the overrides PAPERS_AE_FB, in runs/ptb-ae-fb-softmax-ae), trained once
for both rows in the same way.
``--from DIR`` trains only a method's last stage, warm-started from DIR, an earlier stage's run
directory: one shared with another setting (the full-softmax autoencoder), or one trained on
another machine, of which only checkpoints/best.pt is read (its encoder and posterior).
"""

from __future__ import annotations

import argparse
import os
import platform
import shlex
import shutil
import sys
import time
from pathlib import Path

import torch

from tqdm.auto import tqdm

from seqvae import SeqVAEError, load_run, train
from seqvae.allocator import keep_freed_memory
from seqvae.config import load_layered_config
from seqvae.distributed import join, leave, process_count, process_rank
from seqvae.devices import resolve_device
from seqvae.errors import ReportedByRankZero, TrainingInterrupted
from seqvae.evaluation import format_metrics
from seqvae.files import atomic_write_json
from seqvae.generation import Decoding
from seqvae.report import save_evaluation
from seqvae.locks import wait_until_unlocked

HERE = Path(__file__).parent
CONFIG = HERE / "config.toml"
FILES = {"train": "ptb.train.txt", "valid": "ptb.valid.txt", "test": "ptb.test.txt"}
METHODS = {
    "lm": ("lm",),
    "lm-tied": ("lm-tied",),
    "annealing": ("annealing",),
    "cyclical": ("cyclical",),
    "aggressive": ("aggressive",),
    "ae-fb": ("ae", "ae-fb"),
    "bn-vae": ("bn-vae",),
    "mdr": ("mdr",),
    "iaf": ("iaf",),
    "ae-fb-tied": ("ae", "ae-fb-tied"),
    "seqvae-best": ("ae", "seqvae-best"),
    "seqvae-best-sgd": ("ae", "seqvae-best-sgd"),
}
"""Each method's stages, each stage a file methods/STAGE.toml; a later stage warm-starts from the
run directory of the one before (train.init_from)."""
PAPERS_AE_FB = ("model.output_layer=softmax", "model.init=uniform", "train.optimizer=sgd", "train.learning_rate=0.5",
                "train.lr_patience=5")
"""The full-softmax table's setting for ae-fb (README.md, "Two settings"): Li et al.'s SGD at 0.5
with their patience, from He et al.'s initialisation."""
SHARED_STAGES = {
    "ae-fb-tied": ("ae-fb", ()),
    "seqvae-best": ("ae-fb", ()),
    "seqvae-best-sgd": ("ae-fb", (*PAPERS_AE_FB, "run.dir=runs/ptb-ae-fb-softmax")),
}
"""Methods whose earlier stages are those of another method, trained once: the earlier stages of
``--method HOME`` run with these overrides (then the command line's). They live beside that run's
directory, are continued or reused with their config checked (a different one is an error), and
are never replaced by this method's --overwrite."""


def stage_configs(method: str | None, overrides: list[str], start_from: str | None = None):
    """The configs a method trains, in order (one per stage); with ``start_from``, only the last
    stage's, warm-started from that run directory."""
    if method is None:
        return [load_layered_config([CONFIG], overrides)]
    stages = METHODS[method]
    if start_from is not None:
        if len(stages) == 1:
            raise SeqVAEError(f"--from {start_from}: --method {method} has one stage, which starts from nothing")
        if not (Path(start_from) / "checkpoints" / "best.pt").is_file():
            raise SeqVAEError(f"--from {start_from}: no checkpoints/best.pt (a finished earlier stage's run directory)")
        return [load_layered_config([CONFIG, HERE / "methods" / f"{stages[-1]}.toml"], overrides + [f"train.init_from={start_from}"])]
    home, home_overrides = SHARED_STAGES.get(method, (method, ()))
    # the earlier stages live beside the run directory of the method whose stages they are
    last = load_layered_config([CONFIG, HERE / "methods" / f"{METHODS[home][-1]}.toml"], [*home_overrides, *overrides])
    configs = []
    for index, stage in enumerate(stages):
        extra = []
        earlier = index < len(stages) - 1
        if earlier:
            extra.append(f"run.dir={last.run.dir}-{stage}")
        if index > 0:
            extra.append(f"train.init_from={configs[-1].run.dir}")
        given = [*home_overrides, *overrides] if earlier else overrides
        configs.append(load_layered_config([CONFIG, HERE / "methods" / f"{stage}.toml"], given + extra))
    return configs


def earlier_stage(run_dir: str) -> dict:
    """The record of the earlier stage ``--from`` names, for the row's training time: its run
    directory and the training time its last checkpoint holds (its best's, said so, when only
    best.pt came with it)."""
    for name in ("last.pt", "best.pt"):
        path = Path(run_dir) / "checkpoints" / name
        if path.is_file():
            seconds = float(torch.load(path, map_location="cpu", weights_only=True).get("train_seconds", 0.0))
            record = {"run_dir": str(run_dir), "train_seconds": round(seconds, 3)}
            if name == "best.pt":
                record["note"] = "the training time up to its best checkpoint: the copy has no last.pt"
            return record
    raise SeqVAEError(f"--from {run_dir}: no checkpoints/best.pt (a finished earlier stage's run directory)")


def _device_name(device: torch.device) -> str:
    """``cpu``, or ``cuda (NVIDIA H200)``: which GPU a row ran on matters to its times."""
    return f"cuda ({torch.cuda.get_device_name(device)})" if device.type == "cuda" else str(device)


VALID_FIGURES = ("nll_iw", "ppl_iw", "nll", "ppl", "elbo", "rec", "kl", "mi", "active_units", "iw_samples")
"""The validation figures a row keeps beside its test figures: what a setting is chosen on."""


def results_row(args, argv, run, result, metrics: dict, eval_seconds: float, *, stages: list[dict] | None = None,
                valid: dict | None = None) -> dict:
    """One row of RESULTS.md: the ``seqvae eval --split test --json`` figures of the best
    checkpoint with what it takes to reproduce and judge them: every stage's training time
    (``stages``) and, with ``--eval both``, the validation figures the setting can be chosen on."""
    command = "python recipes/ptb/run.py " + " ".join(shlex.quote(part) for part in (sys.argv[1:] if argv is None else argv))
    return {
        "method": args.method or "default",
        "command": command,
        "output_layer": run.config.model.output_layer,
        # the optimiser and initialisation decide as much as the method here (RESULTS.md)
        "optimizer": run.config.train.optimizer,
        "learning_rate": run.config.train.learning_rate,
        "init": run.config.model.init,
        "seed": run.config.run.seed,
        "checkpoint_file": str(run.checkpoint.path),
        "checkpoint_epochs": run.checkpoint.epoch,
        "epochs_trained": result.epoch,
        "train_seconds": round(result.train_seconds, 3),  # the last stage's; a tiny run trains in under 0.05 s
        **({"stages": stages} if stages else {}),
        **({"valid": {key: valid[key] for key in VALID_FIGURES if key in valid}} if valid else {}),
        "eval_seconds": round(eval_seconds, 3),
        "threads": torch.get_num_threads(),
        "processes": process_count(),
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs, torch {torch.__version__}, {_device_name(run.device)}",
        "split": "test",
        **metrics,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("overrides", nargs="*")
    parser.add_argument("--data-dir", required=True, help="folder with ptb.{train,valid,test}.txt")
    parser.add_argument("--method", choices=tuple(METHODS), help="a row of the PTB table (methods/NAME.toml)")
    parser.add_argument("--overwrite", action="store_true", help="replace existing run directories")
    parser.add_argument("--resume", action="store_true", help="continue the run (each stage) from its last checkpoint")
    parser.add_argument(
        "--from", dest="start_from", metavar="RUN_DIR",
        help="train only the method's last stage, warm-started from RUN_DIR (an earlier stage's run directory, "
        "e.g. an autoencoder shared with another setting or trained on another machine)",
    )
    parser.add_argument(
        "--earlier-stages", action="store_true",
        help="train only the method's earlier stages (the autoencoder that several settings or seeds start from "
        "with --from), then stop without evaluating",
    )
    parser.add_argument(
        "--iw-samples", type=int, default=500,
        help="K of the importance-weighted bound in the final evaluation (500 as published; 0 skips it; "
        "K = 500 on the test set takes about 8 minutes on a 2-core CPU with the adaptive output layer)",
    )
    parser.add_argument(
        "--eval", choices=("both", "valid", "test", "none"), default="both",
        help="which splits the best checkpoint is evaluated on after training (default both)",
    )
    parser.add_argument(
        "--results", metavar="FILE.json",
        help="also write the test evaluation, with the command, output layer, epochs, times and machine, to this "
        "file (recipes/ptb/results/METHOD.json holds each finished row)",
    )
    args = parser.parse_intermixed_args(argv)  # overrides may come before or after the flags
    keep_freed_memory()  # long loops reuse freed memory instead of faulting in fresh pages
    try:
        data_dir = Path(args.data_dir)
        if not data_dir.is_dir():
            raise SeqVAEError(f"{data_dir}: data directory not found")
        for name in FILES.values():
            if not (data_dir / name).is_file():
                raise SeqVAEError(f"{data_dir / name}: missing (a PTB directory holds {', '.join(FILES.values())})")
        data = [f"data.{split}={data_dir / name}" for split, name in FILES.items()]
        configs = stage_configs(args.method, data + args.overrides, args.start_from)
        if args.earlier_stages and (len(configs) == 1 or args.start_from or args.results):
            why = ("trains no earlier stage with --from" if args.start_from else "writes no row with --results"
                   if args.results else f"--method {args.method} has one stage")
            raise SeqVAEError(f"--earlier-stages: {why}")
        main_rank = process_rank() == 0  # under torchrun, rank 0 writes and prints
        if args.overwrite and main_rank and args.method not in SHARED_STAGES:
            # a later stage trained from the replaced run would be stale (a shared earlier stage is
            # never replaced, so nothing after it goes stale)
            for later in configs[1:]:
                if (Path(later.run.dir) / "config.toml").is_file():
                    shutil.rmtree(later.run.dir)
        # each stage's run directory and training time, all sittings (--from: the given stage's too)
        stages = [earlier_stage(args.start_from)] if args.start_from else []
        for index, config in enumerate(configs[:-1] if args.earlier_stages else configs):
            if len(configs) > 1 and main_rank:
                tqdm.write(f"stage {index + 1} of {len(configs)}: {config.run.dir}")
            # --resume continues a stage that has a checkpoint and starts one that has not begun;
            # a stage shared with another method is always continued (or reused) when it exists
            shared = args.method in SHARED_STAGES and index < len(configs) - 1
            if index < len(configs) - 1 and process_count() == 1:
                # an earlier stage may be in training by the other method that shares it (ae-fb and
                # seqvae-best started together): wait for it, then continue or reuse what it left.
                # Under torchrun the refusal stands: the other ranks would time out waiting.
                wait_until_unlocked(config.run.dir, lambda holder, where=config.run.dir: tqdm.write(
                    f"  {where} is being trained by process {holder}: waiting for it to finish"))
            begun = (Path(config.run.dir) / "checkpoints" / "last.pt").is_file()
            continuing = args.resume or shared
            if shared and begun and main_rank:
                home, home_overrides = SHARED_STAGES[args.method]
                tqdm.write(f"  shared with --method {' '.join((home, *home_overrides))}: continued or reused, never replaced")
            # a stage stopped before its first checkpoint has nothing to continue: it starts again
            restart = continuing and not begun and (Path(config.run.dir) / "config.toml").is_file()
            if restart and main_rank:
                tqdm.write(f"  {config.run.dir} has no checkpoint yet: starting it again")
            result = train(config, resume=continuing and begun, overwrite=args.overwrite or restart, echo=tqdm.write)
            stages.append({"run_dir": str(config.run.dir), "train_seconds": round(result.train_seconds, 3)})
            if index < len(configs) - 1 and not result.finished:
                # stopped by train.max_steps or train.max_minutes: the next stage needs this one finished
                leave()
                if main_rank:
                    print(f"stage {index + 1} stopped before its last epoch; continue both stages with --resume")
                return 0
        if args.earlier_stages:
            if main_rank:
                print(f"{config.run.dir}: trained; train the last stage from it with --from {config.run.dir}")
            leave()
            return 0
        splits = {"both": ("valid", "test"), "none": ()}.get(args.eval, (args.eval,))
        if args.results and "test" not in splits:
            raise SeqVAEError(f"--results {args.results}: holds the test evaluation; use --eval test or both")
        # under torchrun every rank evaluates its share of the batches; rank 0 prints and writes
        world, _ = join(config.run.distributed_backend, resolve_device(config.run.device))
        run = load_run(result.run_dir, device=config.run.device)
        if main_rank:
            print(f"\ntrained {result.epoch} epochs, {result.step} steps ({result.train_seconds / 60:.1f} min of training in all sittings)")
        measured = {}
        for split in splits:
            if main_rank:
                print(f"{split} (best checkpoint):")
            started = time.perf_counter()
            metrics = run.evaluate(split, iw_samples=args.iw_samples, progress=main_rank, world=world)
            if not main_rank:
                continue
            measured[split] = metrics
            for line in format_metrics(metrics):
                print(f"  {line}")
            # kept with the run as `seqvae eval` keeps it: a setting is chosen on the validation
            # figures (RESULTS.md), which the recipe records whether or not the test set is evaluated
            kept = save_evaluation(run.run_dir, split, "best", metrics, {"iw_samples": args.iw_samples, "seed": 0,
                                                                          "source": "recipes/ptb/run.py"})
            print(f"  kept in {kept}")
            if split == "test" and args.results:
                row = results_row(args, argv, run, result, metrics, time.perf_counter() - started, stages=stages,
                                  valid=measured.get("valid"))
                atomic_write_json(args.results, row)
                print(f"  written to {args.results}")
        leave()  # every rank has evaluated its share: the process group ends together
        if not main_rank:
            return 0
        print("\nfive sentences decoded from z ~ N(0, I):" if run.model.latent_dim else "\nfive sentences sampled from the language model:")
        # greedy decoding of a language model gives one sentence; sample it instead
        decoding = None if run.model.latent_dim else Decoding("sample")
        for sentence in run.sample(5, seed=config.run.seed, decoding=decoding):
            print(f"  {sentence}")
    except ReportedByRankZero as error:  # rank 0 of a torchrun training prints it
        return error.exit_code
    except TrainingInterrupted as error:
        print(f"ptb: {error}, or rerun this command with --resume", file=sys.stderr)
        return error.exit_code
    except SeqVAEError as error:
        print(f"ptb: error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:  # a second Ctrl-C in training, or one in the final evaluation
        if process_rank() == 0:
            print("ptb: interrupted; rerun this command with --resume to continue from the last checkpoint "
                  "(finished stages are evaluated again)", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Any corpus in one command: read it, decide what a careful practitioner would, plan the run in a
time budget, train the operating point asked for, and hand back a run ready to use.

    python recipes/text/run.py --train FILE [--valid FILE] [--test FILE] --minutes 60
                               [--goal likelihood|balanced|editable] [--run-dir DIR]
                               [--overwrite] [section.key=value ...]
    python recipes/text/run.py --hub NAME [--hub-config C] [--text-column text] --minutes 60 ...
    python recipes/text/run.py --resume --run-dir DIR

One sentence per line (a Hugging Face dataset by name where the machine is online). Every decision
is printed with its reason (seqvae.corpus_decisions): the tokens (words for tokenised text,
SentencePiece for raw text), the vocabulary, the output layer, the length limit, a validation split
carved from training when none is given, the model's sizes, the CPU threads. A probe times the
training step and the evaluation on this machine; the plan then lays the goal's stages out in the
budget in steps, each with a learning rate that warms up, holds and decays (``train.lr_decay =
"wsd"``), and keeps the final evaluation's cost inside the budget. Overrides on the command line
come last and win over every decision.

Everything is written under the run directory (default runs/text-NAME, NAME the training file's
stem): ``data/`` (the splits used), ``decisions.json``, ``plan.json``, each stage's run (the last
one, ``model/``, is the run to use: ``seqvae sample DIR/model``), ``evaluation.json``,
``samples.txt``, ``interpolations.txt``, ``model/report/`` and ``SUMMARY.md`` with the commands to
use it. ``--resume`` continues the plan where it stopped. recipes/text/README.md has the measured
figures behind each goal's settings.
"""

from __future__ import annotations

import argparse
import json
import math
import re
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
from seqvae.corpus_decisions import (SPLIT_SEED, Decision, decide_length, decide_output_layer, decide_sizes,
                                     decide_tokenizer, validation_size)
from seqvae.data.batching import encode_split
from seqvae.data.corpus import Corpus, load_hub_dataset, load_text_files
from seqvae.data.preparation import prepare_data
from seqvae.data.profile import carve_split, length_quantiles, profile_corpus
from seqvae.data.tokenizers import SPECIALS, build_tokenizer
from seqvae.devices import resolve_device
from seqvae.errors import TrainingInterrupted
from seqvae.evaluation import format_metrics
from seqvae.files import atomic_write_json, atomic_write_text
from seqvae.generation import Decoding
from seqvae.planning import (GOALS, Plan, decide_dropout, measured_step_seconds, measured_steps, plan_budget,
                             replan_last_stage, resize_first_stage)
from seqvae.precision import choose_precision
from seqvae.report import save_evaluation, write_report
from seqvae.threads import automatic_choice, use_threads
from seqvae.training.probe import probe

SPLIT_FILES = ("train", "valid", "test")


def read_corpus(args) -> tuple[dict[str, list[str]], str]:
    """The given splits and a name for the corpus."""
    if args.hub:
        splits = load_hub_dataset(args.hub, config_name=args.hub_config, text_column=args.text_column,
                                  split_names={"train": "train", "test": "test"}).splits
        try:
            splits.update(load_hub_dataset(args.hub, config_name=args.hub_config, text_column=args.text_column,
                                           split_names={"valid": "validation"}).splits)
        except SeqVAEError:
            pass  # no validation split: one is carved from training
        return splits, args.hub.rstrip("/").split("/")[-1]
    if not args.train:
        raise SeqVAEError("give --train FILE (or --hub NAME)")
    paths = {"train": args.train, **({"valid": args.valid} if args.valid else {}), **({"test": args.test} if args.test else {})}
    splits = {}
    for split, path in paths.items():  # load_text_files wants a validation file: read each on its own
        splits[split] = load_text_files({"train": path}).splits["train"]
    return splits, Path(args.train).stem


def train_sentencepiece(tokens: Decision, sentences: list[str]):
    """The tokenizer the decision names, trained on the training split; a small corpus holds fewer
    pieces than decided, and then gets the most SentencePiece can make (the decision says so)."""
    try:
        return tokens, build_tokenizer(load_layered_config([], list(tokens.overrides)).tokenizer, sentences)
    except SeqVAEError as error:
        most = re.search(r"value <= (\d+)", str(error))
        if most is None:
            raise
    size = int(most.group(1))
    tokens = Decision(tokens.what, f"SentencePiece (unigram), {size} pieces",
                      ("tokenizer.kind=sentencepiece", f"tokenizer.vocab_size={size}"),
                      f"{tokens.why}; this corpus gives at most {size}")
    return tokens, build_tokenizer(load_layered_config([], list(tokens.overrides)).tokenizer, sentences)


def decide(splits: dict[str, list[str]], say) -> tuple[list[Decision], dict[str, list[str]]]:
    """Every decision about the corpus, printed as made; returns them and the splits to use."""
    profile = profile_corpus(splits["train"])
    say(f"corpus: {profile.sentences:,} training sentences, {profile.tokens:,} tokens, {profile.word_types:,} word forms; "
        f"lengths median {profile.lengths['median']}, 99th percentile {profile.lengths['p99']}, longest {profile.lengths['max']}")
    decisions = []
    if "valid" not in splits:
        count = validation_size(len(splits["train"]))
        if count < 1:
            raise SeqVAEError(f"{len(splits['train'])} training sentences: too few to carve a validation split; give --valid")
        rest, held_out = carve_split(splits["train"], count, seed=SPLIT_SEED)
        splits = {**splits, "train": rest, "valid": held_out}
        decisions.append(Decision("validation", f"{count:,} sentences carved from training", (),
                                  f"none given: 5% of training, at most 3,000, drawn with seed {SPLIT_SEED}; "
                                  f"{len(rest):,} left to train on"))
        profile = profile_corpus(rest)
    tokens = decide_tokenizer(profile)
    decisions.append(tokens)
    if "tokenizer.kind=sentencepiece" in tokens.overrides:
        tokens, tokenizer = train_sentencepiece(tokens, splits["train"])
        decisions[-1] = tokens
        lengths = length_quantiles(encode_split(tokenizer, splits["train"]).lengths)
        vocab_size, unit = tokenizer.vocab_size, "pieces"
    else:
        cut = int(next(item for item in tokens.overrides if item.startswith("tokenizer.min_frequency=")).split("=")[1])
        # the kept words and the specials; an <unk> already in the text is the specials' own
        specials = len(SPECIALS) - (1 if profile.has_unk else 0)
        lengths, vocab_size, unit = profile.lengths, profile.vocabulary_at(cut)[0] + specials, "words"
    decisions += [decide_output_layer(vocab_size), decide_length(lengths, unit), decide_sizes(profile.tokens)]
    for decision in decisions:
        say(f"  {decision.line()}")
    return decisions, splits


def stage_dirs(run_dir: Path, plan: Plan) -> list[Path]:
    """Each stage's run directory; the last is ``model``."""
    return [run_dir / (stage.name if index < len(plan.stages) - 1 else "model") for index, stage in enumerate(plan.stages)]


def base_overrides(run_dir: Path, decisions: list[Decision], splits: dict[str, list[str]], seed: int) -> list[str]:
    data = [f"data.{split}={run_dir / 'data' / f'{split}.txt'}" for split in SPLIT_FILES if split in splits]
    return [*data, f"run.seed={seed}", "train.validation=elbo", "train.log_every=50",
            *(item for decision in decisions for item in decision.overrides)]


def handback_seconds(train_sentences: int) -> float:
    """After the evaluation: the prior fitted to the training codes (an encoder pass and EM;
    measured 9.7 s for 10,000 sentences at one thread beside other work, so 1 ms a sentence),
    the report's plots, samples and interpolations (about 5 s)."""
    return 5.0 + 1e-3 * train_sentences


def decide_threads(requested: int) -> Decision | None:
    """Set torch's threads to the count every stage will train at, so that the probes time a step
    at it: ``requested`` (a user's ``run.threads``: no decision), or the automatic choice, returned
    as a decision. At torch's default of one thread a core, beside a two-thread training on two
    cores, the probes timed a step at 643 ms that then trained at 89 ms on the automatic one."""
    if requested:
        use_threads(requested)
        return None
    threads, why = automatic_choice()
    use_threads(threads)
    return Decision("threads", str(threads), (f"run.threads={threads}",),
                    f"{why}; the step is timed and every stage trains at this count")


def make_plan(run_dir: Path, args, decisions, splits, started: float, say) -> Plan:
    """Probe the first stage's config on this machine and lay the plan out in the budget."""
    overrides = base_overrides(run_dir, decisions, splits, args.seed) + args.overrides
    config = load_layered_config([], overrides)
    threads = decide_threads(config.run.threads)  # before anything is timed
    if threads is not None:
        decisions.append(threads)
        say(f"  {threads.line()}")
    tokenizer = build_tokenizer(config.tokenizer, splits["train"])
    data = prepare_data(config, Corpus(splits=dict(splits)), tokenizer)
    eval_splits = ("valid", "test") if "test" in splits else ("valid",)
    if config.train.precision == "auto":
        # decided once, before the probe times a step in it, for every stage (a stage left to
        # decide for itself could train in another precision than the plan was timed in)
        lengths = sorted(len(sequence) for sequence in data.splits["train"].sequences)
        device = resolve_device(config.run.device)
        choice, reason = choose_precision(device, config, tokenizer.vocab_size, length=lengths[len(lengths) // 2])
        decisions.append(Decision("precision", choice, (f"train.precision={choice}",), reason))
        say(f"  {decisions[-1].line()}")
        config = load_layered_config([], base_overrides(run_dir, decisions, splits, args.seed) + args.overrides)
    say("measuring a training step and the evaluation on this machine ...")
    measured = probe(config, data, eval_splits=eval_splits)
    try:
        plan = plan_budget(goal=args.goal, budget_seconds=60 * args.minutes, spent_seconds=time.perf_counter() - started,
                           step_seconds=measured.step_seconds, steps_per_epoch=measured.steps_per_epoch,
                           validation_seconds=measured.validation_seconds,
                           eval_fixed_seconds=measured.eval_fixed_seconds + handback_seconds(len(splits["train"])),
                           eval_seconds_per_sample=measured.eval_seconds_per_sample, latent_dim=config.model.latent_dim)
    except ValueError as error:
        raise SeqVAEError(f"--minutes {args.minutes:g}: {error}") from None
    # decided from the plan's length (dropout does not change a step's time)
    dropout = decide_dropout(plan, next(d for d in decisions if d.what == "model"))
    if dropout is not None:
        decisions.append(dropout)
        say(f"  {dropout.line()}")
    return plan


class Stages:
    """A plan being carried out: its stage directories and the overrides every stage shares; each
    stage's time cap is set from the plan's last measured step time (``Plan.cap_step_seconds``),
    which plan.json keeps for a later sitting. ``replan`` adopts a plan laid out again, says so and
    saves it to plan.json."""

    def __init__(self, run_dir: Path, plan: Plan, base: list[str], user: list[str]) -> None:
        self.run_dir, self.plan, self.base, self.user = run_dir, plan, base, user
        self.dirs = stage_dirs(run_dir, plan)

    def begun(self, index: int) -> bool:
        return (self.dirs[index] / "checkpoints" / "last.pt").is_file()

    def config(self, index: int):
        stage = self.plan.stages[index]
        warm = [f"train.init_from={self.dirs[index - 1]}"] if index else []
        # a stage that runs past a quarter over its planned time stops there (a slower machine)
        cap = [f"train.max_minutes={1.25 * stage.steps * self.plan.cap_step_seconds / 60 + 0.5:.2f}"]
        return load_layered_config([], [*self.base, *stage.overrides, *warm, *cap, f"run.dir={self.dirs[index]}", *self.user])

    def replan(self, resized: Plan, ran_at: float, what: str, index: int) -> None:
        changes = "; ".join(f"stage {number} resized from {old.steps:,} to {new.steps:,} steps"
                            for number, (old, new) in enumerate(zip(self.plan.stages, resized.stages), 1)
                            if number > index and old.steps != new.steps)
        tqdm.write(f"{what} ran at {1000 * ran_at:.1f} ms a step (planned {1000 * self.plan.step_seconds:.1f}): "
                   + (changes or f"stage {index + 1} kept at {self.plan.stages[index].steps:,} steps"))
        saved = json.loads((self.run_dir / "plan.json").read_text(encoding="utf-8"))
        atomic_write_json(self.run_dir / "plan.json", {**saved, "plan": resized.to_json()})
        self.plan = resized


def measure_first_stage(stages: Stages) -> None:
    """Train the first stage to each of its pauses (a tenth of its steps, after the probe's few: the
    real speed of other lengths on a machine that may be busy; then half) and lay the plan out
    again at the speed it ran at; a stage past a pause stops there at once and is measured."""
    while (at := measured_steps(stages.plan)) is not None:
        begun = stages.begun(0)
        measured = train(stages.config(0), resume=begun, overwrite=not begun, echo=tqdm.write, pause_at_step=at)
        # validated after each epoch it finished, not at the pause
        ran_at = measured_step_seconds(measured.train_seconds, measured.step, measured.step // stages.plan.steps_per_epoch,
                                       stages.plan.validation_seconds)
        resized = resize_first_stage(stages.plan, elapsed_seconds=stages.plan.spent_seconds + measured.train_seconds,
                                     step_seconds=ran_at, done_steps=measured.step)
        stages.replan(resized, ran_at, f"its first {measured.step:,} steps", 0)


def train_stages(run_dir: Path, plan: Plan, base: list[str], user: list[str]) -> tuple[Path, Plan]:
    """Train (or continue: a stage begun by an earlier sitting or a pause) each stage in turn;
    returns the last stage's run directory and the plan as it was carried out. The plan is laid
    out again at the step time training really ran at (seqvae.planning): the first stage pauses
    at a tenth and at half of its steps, and goes on as the longer or shorter run it would have
    been planned as, a later stage planned in what is left; a two-stage plan's last stage is
    resized once more before it begins, from the first stage's whole run. plan.json records each
    change."""
    stages = Stages(run_dir, plan, base, user)
    trained_seconds, trained_steps, validations = 0.0, 0, 0
    last = len(stages.dirs) - 1
    for index, stage_dir in enumerate(stages.dirs):
        if index == last and index > 0 and not stages.begun(index):
            # the steps the earlier stages took, not those planned: a stage may stop at its time cap
            ran_at = measured_step_seconds(trained_seconds, trained_steps, validations, stages.plan.validation_seconds)
            resized = replan_last_stage(stages.plan, elapsed_seconds=stages.plan.spent_seconds + trained_seconds,
                                        step_seconds=ran_at)
            stages.replan(resized, ran_at, "the earlier stages", index)  # its cap too, when its steps hold
        tqdm.write(f"stage {index + 1} of {last + 1}, {stages.plan.stages[index].name}: {stage_dir}")
        if index == 0 and not any(stages.begun(later) for later in range(1, last + 1)):
            measure_first_stage(stages)
        begun = stages.begun(index)
        result = train(stages.config(index), resume=begun, overwrite=not begun, echo=tqdm.write)
        trained_seconds += result.train_seconds
        trained_steps += result.step
        validations += math.ceil(result.step / stages.plan.steps_per_epoch)  # one an epoch, one at the stage's end
        planned = stages.plan.stages[index].steps
        if result.step < planned:
            tqdm.write(f"  stage {index + 1} stopped at step {result.step:,} of {planned:,} (its time cap)")
    return stages.dirs[-1], stages.plan


def evaluate_splits(run, model_dir: Path, plan: Plan, splits, say) -> dict[str, dict]:
    """Every measure of ``seqvae eval`` on validation and test (where given) at the planned K,
    saved with the run as ``seqvae eval`` saves them."""
    evaluation = {}
    for split in ("valid", "test"):
        if split not in splits:
            continue
        started = time.perf_counter()
        metrics = run.evaluate(split, iw_samples=plan.iw_samples, progress=True)
        settings = {"iw_samples": plan.iw_samples, "eval_seconds": round(time.perf_counter() - started, 1)}
        save_evaluation(model_dir, split, "best", metrics, settings)
        evaluation[split] = {**settings, **metrics}
        say(f"{split} (best checkpoint, K = {plan.iw_samples}):")
        for line in format_metrics(metrics):
            say(f"  {line}")
    return evaluation


SUMMARY_FIGURES = (("IW-PPL", "ppl_iw"), ("IW-PPL, fitted prior", "ppl_iw_fitted"), ("KL", "kl"), ("MI", "mi"),
                   ("active units", "active_units"), ("reconstruction BLEU", "bleu"),
                   ("prior self-BLEU", "prior_self_bleu"), ("homotopy end BLEU", "homotopy_endpoint_bleu"))


def summary_markdown(plan: Plan, evaluation: dict, model_dir: Path, report: Path, how: str, samples: list[str],
                     commands: list[str]) -> str:
    """SUMMARY.md: the plan, the main figures per split, samples and the commands."""
    table = ["| split | K | " + " | ".join(name for name, _ in SUMMARY_FIGURES) + " |", "|---" * (len(SUMMARY_FIGURES) + 2) + "|"]
    for split, metrics in evaluation.items():
        cells = [f"{metrics[key]:.2f}" if isinstance(metrics.get(key), float) else str(metrics.get(key, "-"))
                 for _, key in SUMMARY_FIGURES]
        table.append(f"| {split} | {metrics['iw_samples']} | " + " | ".join(cells) + " |")
    return "\n".join([
        "# What this run holds", "", *(f"- {line}" for line in plan.lines()), "", "## Evaluation (best checkpoint)", "",
        *table, "", "Every measure: `evaluation.json`; definitions: docs/measures.md in seqvae.", "",
        f"Best checkpoint: `{model_dir}/checkpoints/best.pt`; report: `{report}`.", "",
        f"## Samples ({how})", "", *(f"- {s}" for s in samples[:5]), "", "## Commands", "",
        "```", *commands, "```", "",
    ])


def sample_decoding(goal: str) -> tuple[Decoding, str, str]:
    """How the hand-back's twenty samples are decoded, in words, and as ``seqvae sample`` flags.
    A likelihood model's codes carry a few nats (KL about 8 on PTB), so greedy decoding of a prior
    code mostly gives its decoder's mode, which loops ("the <unk> of the <unk> of ..." in three of
    the PTB 180-minute run's first five); its tokens are drawn from p(x|z) instead, the density its
    bound measures. The other goals' codes carry the sentence, and greedy decoding shows what a
    code holds, as the prior-sample measures do (evaluation.json's are greedy for every goal)."""
    if goal == "likelihood":
        return Decoding("sample"), "tokens drawn from p(x|z)", " --strategy sample"
    return Decoding(), "greedy decoding", ""


def hand_back(run_dir: Path, model_dir: Path, plan: Plan, splits, say) -> None:
    """Evaluate, sample, interpolate, report, and write the summary with the commands."""
    run = load_run(model_dir)
    if run.config.prior.fit and not run.has_fitted_prior():
        say("fitting the prior to the training codes ...")
        run.fit_prior(progress=True)
        run = load_run(model_dir)
    evaluation = evaluate_splits(run, model_dir, plan, splits, say)
    atomic_write_json(run_dir / "evaluation.json", evaluation)
    decoding, decoded, flags = sample_decoding(plan.goal)
    samples = run.sample(20, seed=0, decoding=decoding)
    atomic_write_text(run_dir / "samples.txt", "".join(f"{s}\n" for s in samples))
    source = splits.get("test", splits["valid"])
    picks = [source[(i * 7919) % len(source)] for i in range(10)]
    lines = []
    for first, second in zip(picks[0::2], picks[1::2]):
        lines += [f"{first}  ->  {second}", *(f"  {t:.2f}  {s}" for t, s in run.interpolate(first, second, steps=6)), ""]
    atomic_write_text(run_dir / "interpolations.txt", "\n".join(lines))
    report = write_report(model_dir)
    model = shlex.quote(str(model_dir))
    commands = [
        f"seqvae sample {model} -n 10{flags}",
        f"seqvae interpolate {model} {shlex.quote(picks[0])} {shlex.quote(picks[1])} --steps 6",
        f"seqvae encode {model} --input SENTENCES.txt --output codes.jsonl",
        f"seqvae attribute {model} --with HAVE_IT.txt --without LACK_IT.txt --apply SENTENCES.txt --scale 1 1.5 2",
        f"seqvae eval {model} --split valid",
    ]
    atomic_write_text(run_dir / "SUMMARY.md", summary_markdown(plan, evaluation, model_dir, report["markdown"],
                                                               f"prior: {run.config.prior.default}; {decoded}", samples, commands))
    say(f"\nfive of the twenty samples in samples.txt ({decoded}):")
    for sentence in samples[:5]:
        say(f"  {sentence}")
    say("\nto use it:")
    for command in commands:
        say(f"  {command}")
    say(f"written under {run_dir}: SUMMARY.md, evaluation.json, samples.txt, interpolations.txt, model/report/")


def continue_plan(args, say) -> tuple[Path, Plan, list[Decision], dict[str, list[str]]]:
    """--resume: the saved plan, decisions and splits of ``--run-dir``; the saved overrides, seed
    and budget replace the command line's."""
    if not args.run_dir:
        raise SeqVAEError("--resume needs --run-dir (the run directory of the plan to continue)")
    run_dir = Path(args.run_dir)
    plan_file = run_dir / "plan.json"
    if not plan_file.is_file():
        raise SeqVAEError(f"{plan_file}: no plan to continue (start the run without --resume)")
    saved = json.loads(plan_file.read_text(encoding="utf-8"))
    plan = Plan.from_json(saved["plan"])
    decisions = [Decision(d["what"], d["value"], tuple(d["overrides"]), d["why"]) for d in saved["decisions"]]
    splits = {split: load_text_files({"train": str(run_dir / "data" / f"{split}.txt")}).splits["train"]
              for split in SPLIT_FILES if (run_dir / "data" / f"{split}.txt").is_file()}
    args.overrides, args.seed = saved["overrides"], saved["seed"]
    args.minutes = plan.budget_seconds / 60
    say(f"continuing the plan of {plan_file} (a budget of {args.minutes:g} min)")
    return run_dir, plan, decisions, splits


def new_plan(args, argv, started: float, say) -> tuple[Path, Plan, list[Decision], dict[str, list[str]]]:
    """Read the corpus, decide, measure and plan; only then replace an earlier run of this recipe
    and write the splits used and plan.json."""
    splits, name = read_corpus(args)
    run_dir = Path(args.run_dir or f"runs/text-{name}")
    if run_dir.exists() and any(run_dir.iterdir()):
        if not args.overwrite:
            raise SeqVAEError(f"{run_dir}: exists; pass --resume to continue its plan or --overwrite to replace it")
        if not (run_dir / "plan.json").is_file():
            raise SeqVAEError(f"{run_dir}: exists and holds no plan.json of this recipe; refusing to replace it")
    decisions, splits = decide(splits, say)
    plan = make_plan(run_dir, args, decisions, splits, started, say)
    if run_dir.exists():
        shutil.rmtree(run_dir)  # only now that the new plan stands
    (run_dir / "data").mkdir(parents=True)
    for split, sentences in splits.items():
        atomic_write_text(run_dir / "data" / f"{split}.txt", "".join(f"{s}\n" for s in sentences))
    atomic_write_json(run_dir / "plan.json", {
        "plan": plan.to_json(), "decisions": [d.__dict__ for d in decisions], "overrides": args.overrides,
        "seed": args.seed, "command": " ".join(shlex.quote(a) for a in (sys.argv[1:] if argv is None else argv)),
        "threads": torch.get_num_threads(),
    })
    return run_dir, plan, decisions, splits


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("overrides", nargs="*", help="section.key=value, applied after every decision")
    parser.add_argument("--train", help="training file, one sentence per line")
    parser.add_argument("--valid", help="validation file (default: carved from --train)")
    parser.add_argument("--test", help="test file (optional)")
    parser.add_argument("--hub", help="a Hugging Face dataset name instead of files (needs the network)")
    parser.add_argument("--hub-config", default="")
    parser.add_argument("--text-column", default="text")
    parser.add_argument("--minutes", type=float, help="the whole budget: reading, training, evaluation (--resume: the saved plan's)")
    parser.add_argument("--goal", choices=GOALS, default="balanced",
                        help="likelihood (best bound), balanced (default), editable (homotopies and edits)")
    parser.add_argument("--run-dir", help="default runs/text-NAME")
    parser.add_argument("--seed", type=int, default=0)
    group = parser.add_mutually_exclusive_group()
    group.add_argument("--resume", action="store_true", help="continue the saved plan where it stopped")
    group.add_argument("--overwrite", action="store_true", help="replace an existing run directory")
    args = parser.parse_intermixed_args(argv)
    keep_freed_memory()
    started = time.perf_counter()
    say = tqdm.write
    run_dir = Path(args.run_dir) if args.run_dir else None
    try:
        if args.minutes is None and not args.resume:
            raise SeqVAEError("give --minutes, the budget of the whole run")
        if args.minutes is not None and args.minutes <= 0:
            raise SeqVAEError(f"--minutes {args.minutes:g}: give a positive budget")
        if args.resume:
            run_dir, plan, decisions, splits = continue_plan(args, say)
        else:
            run_dir, plan, decisions, splits = new_plan(args, argv, started, say)
        for line in plan.lines():
            say(line)
        if args.overrides:
            say(f"your overrides, applied last: {' '.join(args.overrides)}")
        base = base_overrides(run_dir, decisions, splits, args.seed)
        model_dir, plan = train_stages(run_dir, plan, base, args.overrides)
        hand_back(run_dir, model_dir, plan, splits, say)
        say(f"\n{(time.perf_counter() - started) / 60:.1f} min in this sitting (budget {args.minutes:g} min)")
    except TrainingInterrupted as error:
        # the plan's own command, not the stage's seqvae train --resume, which would skip the rest of the plan
        print(f"text: {error.stopped}; continue the plan with: python recipes/text/run.py --resume --run-dir {run_dir}",
              file=sys.stderr)
        return error.exit_code
    except SeqVAEError as error:
        print(f"text: error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"text: interrupted; continue with: python recipes/text/run.py --resume --run-dir {run_dir}", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""recipes/text/run.py as a user runs it: a corpus with no config, a budget, a run handed back
ready to use, its plan continued by --resume, and bad input refused in one line."""

from __future__ import annotations

import argparse
import dataclasses
import importlib.util
import json
import os
import shutil
import signal
import sys
import time
from pathlib import Path

import pytest
import torch

from seqvae import load_run
from seqvae.generation import Decoding
from seqvae.training.probe import Probe
from seqvae.training.trainer import Trainer

from conftest import THREADS

ROOT = Path(__file__).resolve().parents[1]


def _recipe():
    sys.path.insert(0, str(ROOT / "recipes" / "text"))
    spec = importlib.util.spec_from_file_location("text_recipe", ROOT / "recipes" / "text" / "run.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


TINY = [f"run.threads={THREADS}", "model.embedding_dim=16", "model.hidden_dim=24", "model.latent_dim=4", "train.batch_size=16"]
"""A model the size of the other tests' (the overrides win over the recipe's size decision)."""


def test_a_raw_corpus_goes_through_with_no_config_and_comes_back_ready_to_use(tiny_corpus, tmp_path, capsys):
    """Raw text (the tiny corpus detokenised), no validation split, the likelihood goal's two
    stages, the hand-back, then --resume of a plan stopped before its second stage."""
    spec = importlib.util.spec_from_file_location("detokenize", ROOT / "recipes" / "text" / "detokenize.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    raw = {}
    for split in ("train", "test"):
        raw[split] = tmp_path / f"reviews-{split}.txt"
        raw[split].write_text("".join(module.detokenize(line) + "\n" for line in tiny_corpus[split].read_text().splitlines()))
    run_dir = tmp_path / "out"
    recipe = _recipe()
    main = recipe.main
    # the precision decision without its timed probe, which on a CPU with bf16 units could pick
    # either for a model this small and make the run depend on the machine's load
    recipe.choose_precision = lambda *args, **kwargs: ("fp32", "faked in this test")
    args = ["--train", str(raw["train"]), "--test", str(raw["test"]), "--minutes", "0.2", "--goal", "likelihood",
            "--run-dir", str(run_dir), *TINY]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "SentencePiece" in out and "raw text" in out  # decided, and said why
    assert "validation: " in out and "carved from training" in out
    assert "stage 1 of 2, autoencoder" in out and "stage 2 of 2, vae" in out
    for name in ("SUMMARY.md", "evaluation.json", "samples.txt", "interpolations.txt", "plan.json", "data/valid.txt",
                 "autoencoder/checkpoints/best.pt", "model/checkpoints/best.pt", "model/prior.json", "model/report/report.md"):
        assert (run_dir / name).is_file(), name
    saved = json.loads((run_dir / "plan.json").read_text())
    assert saved["plan"]["goal"] == "likelihood" and saved["overrides"] == TINY
    # the first stage paused at a tenth and at half of its steps, and both stages were laid out again
    assert out.count("ran at") >= 2 and "its first" in out and saved["plan"]["resizes"] >= 2
    assert len((run_dir / "samples.txt").read_text().splitlines()) == 20
    evaluation = json.loads((run_dir / "evaluation.json").read_text())
    assert set(evaluation) == {"valid", "test"} and evaluation["test"]["iw_samples"] == saved["plan"]["iw_samples"]
    run = load_run(run_dir / "model")
    assert run.config.tokenizer.kind == "sentencepiece" and run.config.train.lr_decay == "wsd"
    assert run.config.train.init_from == str((run_dir / "autoencoder").resolve())
    assert run.checkpoint.step <= saved["plan"]["stages"][1]["steps"]
    # train.precision = auto decided once, before the probe, said, and kept by every stage
    (precision,) = [decision for decision in saved["decisions"] if decision["what"] == "precision"]
    assert precision["value"] == "fp32" and "precision: fp32. Why: faked in this test" in out
    assert run.config.train.precision == load_run(run_dir / "autoencoder").config.train.precision == precision["value"]
    # a likelihood model's samples are drawn token by token (greedy decodes of its prior codes loop)
    summary = (run_dir / "SUMMARY.md").read_text()
    assert "tokens drawn from p(x|z)" in summary and " -n 10 --strategy sample" in summary
    drawn = run.sample(20, seed=0, decoding=Decoding("sample"))
    assert (run_dir / "samples.txt").read_text().splitlines() == drawn != run.sample(20, seed=0)
    # stopped before its second stage began (its directory gone): --resume keeps the first and
    # trains the second, resized to what is left of the budget
    first = (run_dir / "autoencoder" / "checkpoints" / "best.pt").read_bytes()
    shutil.rmtree(run_dir / "model")
    assert main(["--resume", "--run-dir", str(run_dir)]) == 0
    out = capsys.readouterr().out
    assert "continuing the plan" in out and "stage 2 of 2, vae" in out
    assert (run_dir / "model" / "checkpoints" / "best.pt").is_file()
    assert (run_dir / "autoencoder" / "checkpoints" / "best.pt").read_bytes() == first
    steps = json.loads((run_dir / "plan.json").read_text())["plan"]["stages"][1]["steps"]
    assert load_run(run_dir / "model").config.train.max_steps == steps


def test_a_one_stage_goal_measures_its_speed_as_it_goes_and_takes_the_rest_of_its_budget(tiny_corpus, tmp_path, capsys):
    """The balanced goal trains one stage: it pauses after a tenth of its planned steps and again at
    half, resizes the stage each time to the speed its steps ran at, says so, records it in
    plan.json, and goes on in the same run directory (one run, no validation at a pause) to the
    resized length."""
    run_dir = tmp_path / "out"
    recipe = _recipe()
    recipe.choose_precision = lambda *args, **kwargs: ("fp32", "faked in this test")
    # a probe that says ten times the real step time: the plan starts short, by more than a busy
    # machine's steps can slow down while it trains (CI beside two trainings once ran its steps at
    # over three times the probe's real time, and a threefold probe was not lengthened)
    measure = recipe.probe
    recipe.probe = lambda *args, **kwargs: dataclasses.replace(found := measure(*args, **kwargs),
                                                               step_seconds=10 * found.step_seconds)
    args = ["--train", str(tiny_corpus["train"]), "--valid", str(tiny_corpus["valid"]), "--minutes", "0.4",
            "--goal", "balanced", "--run-dir", str(run_dir), *TINY]
    assert recipe.main(args) == 0
    out = capsys.readouterr().out
    saved = json.loads((run_dir / "plan.json").read_text())["plan"]
    (stage,) = saved["stages"]
    assert saved["resizes"] == 2 and out.count("stage 1 resized from") == 2 and "ms a step (planned" in out
    paused = [int(part.split()[0]) for part in out.split("paused at step ")[1:]]
    assert len(paused) == 2 and all(f"its first {at:,} steps ran at" in out for at in paused)
    run = load_run(run_dir / "model")
    assert run.config.train.max_steps == stage["steps"] and f"train.max_steps={stage['steps']}" in stage["overrides"]
    # the steps it reached are the last checkpoint's (the best one may come before the second pause)
    last = load_run(run_dir / "model", checkpoint="last").checkpoint
    assert paused[0] < paused[1] < last.step <= stage["steps"]
    # lengthened to the real speed, and the summary handed back shows the plan as it was carried out
    planned = int(out.split("stage 1, vae: ")[1].split()[0].replace(",", ""))
    assert stage["steps"] > 1.5 * planned
    assert f"stage 1, vae: {stage['steps']:,} steps" in (run_dir / "SUMMARY.md").read_text()
    records = [json.loads(line) for line in (run_dir / "model" / "metrics.jsonl").read_text().splitlines()]
    assert not [r for r in records if r["split"] == "valid" and r["step"] in paused and "stopped_by" in r]
    # the balanced goal's samples are greedy decodes, from its fitted prior
    assert "(prior: fitted; greedy decoding)" in (run_dir / "SUMMARY.md").read_text()
    assert (run_dir / "samples.txt").read_text().splitlines() == run.sample(20, seed=0)


def test_bad_input_is_one_line_and_nothing_is_replaced(tiny_corpus, tmp_path, capsys):
    main = _recipe().main
    assert main(["--train", str(tmp_path / "missing.txt"), "--minutes", "1"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "missing.txt" in err[0]
    existing = tmp_path / "taken"
    existing.mkdir()
    (existing / "keep.txt").write_text("mine")
    assert main(["--train", str(tiny_corpus["train"]), "--minutes", "1", "--run-dir", str(existing)]) == 2
    assert "exists" in capsys.readouterr().err and (existing / "keep.txt").read_text() == "mine"
    assert main(["--resume", "--run-dir", str(tmp_path / "nothing")]) == 2
    assert "no plan to continue" in capsys.readouterr().err
    assert main(["--train", str(tiny_corpus["train"]), "--minutes", "0.01", "--run-dir", str(tmp_path / "short"), *TINY]) == 2
    assert "give more minutes" in capsys.readouterr().err


def test_a_hub_dataset_without_a_validation_split_is_read_and_one_is_carved(tiny_corpus, tmp_path):
    """The hub path with its real loader, offline: a local dataset folder in the hub's layout
    stands for the hub name, as in test_corpus.py."""
    folder = tmp_path / "reviews"
    folder.mkdir()
    for split in ("train", "test"):
        rows = tiny_corpus[split].read_text().splitlines()
        (folder / f"{split}.jsonl").write_text("".join(json.dumps({"sentence": row}) + "\n" for row in rows))
    recipe = _recipe()
    args = recipe.argparse.Namespace(hub=str(folder), hub_config="", text_column="sentence", train=None, valid=None, test=None)
    splits, name = recipe.read_corpus(args)
    assert name == "reviews" and set(splits) == {"train", "test"} and len(splits["train"]) == 300
    said = []
    decisions, used = recipe.decide(splits, said.append)
    assert len(used["valid"]) == recipe.validation_size(300) == 100
    assert sorted(used["train"] + used["valid"]) == sorted(splits["train"]) and used["test"] == splits["test"]
    assert decisions[0].what == "validation" and any("carved from training" in line for line in said)


def test_a_later_sitting_caps_a_stage_at_the_step_time_measured_not_the_probe_s(tmp_path):
    # the PTB 180-minute run of 2026-12-03: the probe said 54 ms a step and training ran at about
    # 70; the sitting that sized stage 2 capped it at 1.25 times its steps at 70 ms, and the
    # sitting that continued it a day later at 54 ms, which stopped it 7,837 steps short with its
    # learning-rate decay two-thirds done
    recipe = _recipe()
    from seqvae.planning import Plan, plan_budget, replan_last_stage

    plan = plan_budget(goal="likelihood", budget_seconds=3 * 3600, spent_seconds=60.0, step_seconds=0.054,
                       steps_per_epoch=1315, validation_seconds=5.7, eval_fixed_seconds=300.0,
                       eval_seconds_per_sample=2.0, latent_dim=32)
    (tmp_path / "plan.json").write_text(json.dumps({"plan": plan.to_json()}), encoding="utf-8")
    first = recipe.Stages(tmp_path, plan, [], [])
    assert first.config(1).train.max_minutes == pytest.approx(1.25 * plan.stages[1].steps * 0.054 / 60 + 0.5, abs=0.01)
    resized = replan_last_stage(plan, elapsed_seconds=60.0 + plan.stages[0].steps * 0.07, step_seconds=0.07)
    first.replan(resized, 0.07, "the earlier stages", 1)
    cap = first.config(1).train.max_minutes
    assert cap == pytest.approx(1.25 * resized.stages[1].steps * 0.07 / 60 + 0.5, abs=0.01)
    # a new sitting reads the plan back from plan.json, as --resume does
    saved = Plan.from_json(json.loads((tmp_path / "plan.json").read_text(encoding="utf-8"))["plan"])
    assert saved.ran_step_seconds == 0.07 and recipe.Stages(tmp_path, saved, [], []).config(1).train.max_minutes == cap
    # a machine faster than the probe still caps at the probe's step time
    faster = replan_last_stage(plan, elapsed_seconds=60.0 + plan.stages[0].steps * 0.03, step_seconds=0.03)
    assert faster.cap_step_seconds == 0.054


def test_the_thread_count_is_decided_before_anything_is_timed_and_kept_by_every_stage(tiny_corpus, tmp_path, capsys):
    # 2026-12-05, beside a two-thread training on two cores: the probes ran at torch's default of
    # two threads and timed a step at 643 ms that then trained at 89 ms on the automatic one
    recipe = _recipe()
    seen = {}

    def fake_precision(*args, **kwargs):
        seen["precision"] = torch.get_num_threads()
        return "fp32", "faked in this test"

    def fake_probe(*args, **kwargs):
        seen["probe"] = torch.get_num_threads()
        return Probe(step_seconds=0.01, steps_per_epoch=10, validation_seconds=0.1, eval_fixed_seconds=1.0,
                     eval_seconds_per_sample=0.01)

    recipe.automatic_choice = lambda: (1, "faked: 2 CPUs, 1.0 busy")
    recipe.choose_precision, recipe.probe = fake_precision, fake_probe
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(2)
        args = argparse.Namespace(train=str(tiny_corpus["train"]), valid=str(tiny_corpus["valid"]), test=None, hub=None,
                                  hub_config="", text_column="text", minutes=5.0, goal="balanced", run_dir=str(tmp_path / "out"),
                                  seed=0, resume=False, overwrite=False, overrides=["train.precision=auto"])
        run_dir, plan, decisions, splits = recipe.new_plan(args, [], time.perf_counter(), print)
        assert seen == {"precision": 1, "probe": 1}
        (threads,) = [decision for decision in decisions if decision.what == "threads"]
        assert threads.overrides == ("run.threads=1",) and "threads: 1. Why: faked: 2 CPUs, 1.0 busy" in capsys.readouterr().out
        saved = json.loads((run_dir / "plan.json").read_text(encoding="utf-8"))
        assert saved["threads"] == 1 and {"what": "threads", "value": "1", "overrides": ["run.threads=1"],
                                          "why": threads.why} in saved["decisions"]
        stages = recipe.Stages(run_dir, plan, recipe.base_overrides(run_dir, decisions, splits, 0), [])
        assert all(stages.config(index).run.threads == 1 for index in range(len(plan.stages)))
        # a count the user sets is used as it is, with no decision of the recipe's
        torch.set_num_threads(2)
        args.overrides, args.overwrite = [f"run.threads={THREADS}", "train.precision=auto"], True
        _, _, decisions, _ = recipe.new_plan(args, [], time.perf_counter(), print)
        assert seen == {"precision": THREADS, "probe": THREADS}
        assert not [decision for decision in decisions if decision.what == "threads"]
    finally:
        torch.set_num_threads(before)


def test_an_interrupted_plan_names_the_recipe_s_resume_only(tiny_corpus, tmp_path, capsys, monkeypatch):
    # the stage's own hint (seqvae train DIR/config.toml --resume) would finish that stage and skip
    # the rest of the plan and the hand-back; the recipe printed both until 2026-12-06
    recipe = _recipe()
    recipe.choose_precision = lambda *args, **kwargs: ("fp32", "faked in this test")

    def signalled(trainer, **kwargs):
        os.kill(os.getpid(), signal.SIGINT)
        time.sleep(5)  # the training's handler runs here and stops the validation
        raise AssertionError("the signal did not stop the validation")

    monkeypatch.setattr(Trainer, "measure_validation", signalled)
    run_dir = tmp_path / "out"
    args = ["--train", str(tiny_corpus["train"]), "--minutes", "0.2", "--run-dir", str(run_dir), *TINY]
    assert recipe.main(args) == 130
    said = [line for line in capsys.readouterr().err.replace("\r", "\n").splitlines() if line.startswith("text:")]
    assert len(said) == 1 and said[0].startswith("text: SIGINT: training stopped at step ") and "seqvae train" not in said[0]
    assert said[0].endswith(f"; continue the plan with: python recipes/text/run.py --resume --run-dir {run_dir}")
    assert (run_dir / "model" / "checkpoints" / "last.pt").is_file()

"""The text recipe's decisions and its budget plan (seqvae.data.profile, seqvae.corpus_decisions, seqvae.planning): pure
functions of the corpus's figures, the measured times and the budget, tested on constructed
corpora; and the step-wise learning-rate rule the plan trains with (train.lr_decay = "wsd")."""

from __future__ import annotations

import importlib.util
import math
from pathlib import Path

import pytest

from seqvae.config import load_layered_config
from seqvae.data.profile import carve_split, profile_corpus, quantile
from seqvae.errors import SeqVAEError
from seqvae.corpus_decisions import (ADAPTIVE_FROM, WORD_VOCABULARY_CAP, decide_length, decide_output_layer, decide_sizes,
                                     decide_tokenizer, validation_size)
from seqvae.planning import (AE_SHARE, EVAL_SHARE, IW_CHOICES, LONG_RUN_EPOCHS, MARGIN_SHARE, Plan, decide_dropout,
                             measured_step_seconds, measured_steps, plan_budget, replan_last_stage, resize_first_stage)
from seqvae.training import train
from seqvae.training.optimization import wsd_learning_rate
from seqvae.config import TrainConfig

from conftest import metrics, tiny_config

ROOT = Path(__file__).resolve().parents[1]


def _detokenize():
    spec = importlib.util.spec_from_file_location("detokenize", ROOT / "recipes" / "text" / "detokenize.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.detokenize


def test_detokenize_joins_punctuation_and_clitics_as_people_type_them():
    detokenize = _detokenize()
    assert detokenize("the cat 's toy is n't here .") == "The cat's toy isn't here."
    assert detokenize("he paid $ N million ( or so ) , she said") == "He paid $N million (or so), she said"
    assert detokenize("<unk> said he 'd go .") == "<unk> said he'd go."


def test_the_profile_tells_tokenised_text_from_raw_text(tiny_corpus):
    tokenised = tiny_corpus["train"].read_text().splitlines()
    raw = [_detokenize()(line) for line in tokenised]
    assert profile_corpus(tokenised).tokenised
    profile = profile_corpus(raw)
    assert not profile.tokenised and profile.final_glued_share > 0.9
    # PTB's style: no punctuation at all, clitics apart, <unk> present
    ptb_like = ["the company 's shares fell N % <unk> said", "it does n't matter to mr. smith"] * 20
    ptb = profile_corpus(ptb_like)
    assert ptb.tokenised and ptb.has_unk and ptb.glued_share == 0


def test_profile_counts_match_a_direct_count():
    sentences = ["a b c", "a b", "a d e f g"]
    profile = profile_corpus(sentences)
    assert (profile.sentences, profile.tokens, profile.word_types, profile.singleton_types) == (3, 10, 7, 5)
    assert profile.lengths == {"median": 3, "p95": 5, "p99": 5, "p99.9": 5, "max": 5}
    assert profile.vocabulary_at(2) == (2, pytest.approx(0.5))
    assert quantile([1, 2, 3, 4], 0.5) == 2 and quantile([1, 2, 3, 4], 0.51) == 3


def test_the_tokens_decision_follows_the_text():
    raw = profile_corpus(["Hello, world.", "It's here, they said."] * 50)
    decision = decide_tokenizer(raw)
    assert "tokenizer.kind=sentencepiece" in decision.overrides and "raw text" in decision.why
    with_singletons = profile_corpus(["the cat sat .", "the dog sat .", "a zebra ran ."])
    assert "tokenizer.min_frequency=2" in decide_tokenizer(with_singletons).overrides
    marked = profile_corpus(["the <unk> sat .", "the cat sat ."])
    assert "tokenizer.min_frequency=1" in decide_tokenizer(marked).overrides
    # more types than the cap at a cut of 2: the cut rises until the vocabulary fits
    many = [f"w{i} w{i}" for i in range(WORD_VOCABULARY_CAP + 10)] + ["x"]
    decision = decide_tokenizer(profile_corpus(many))
    assert "tokenizer.min_frequency=3" in decision.overrides and "at most" in decision.why


def test_output_layer_length_limit_and_sizes():
    assert decide_output_layer(ADAPTIVE_FROM - 1).overrides == ("model.output_layer=softmax",)
    adaptive = decide_output_layer(10_000).overrides
    assert adaptive == ("model.output_layer=adaptive", "model.adaptive_cutoffs=2000,6000")
    assert decide_length({"median": 10, "p95": 20, "p99": 25, "p99.9": 30, "max": 40}, "words").overrides == ("data.max_length=0",)
    limited = decide_length({"median": 10, "p95": 20, "p99": 25, "p99.9": 60, "max": 900}, "words")
    assert limited.overrides == ("data.max_length=60", "data.length_policy=truncate")
    assert "model.hidden_dim=192" in decide_sizes(100_000).overrides
    assert "model.hidden_dim=256" in decide_sizes(900_000).overrides
    assert "model.hidden_dim=512" in decide_sizes(20_000_000).overrides
    for decision in (decide_sizes(100_000), decide_sizes(900_000), decide_sizes(20_000_000), limited):
        load_layered_config([], list(decision.overrides))  # every decision is a valid config


def test_a_carved_validation_split_is_fixed_disjoint_and_complete():
    sentences = [f"sentence {i}" for i in range(1000)]
    assert validation_size(1000) == 100 and validation_size(200_000) == 3000 and validation_size(50) == 25
    rest, held_out = carve_split(sentences, 100, seed=0)
    assert len(held_out) == 100 and sorted(rest + held_out) == sorted(sentences)
    assert carve_split(sentences, 100, seed=0) == (rest, held_out)
    assert carve_split(sentences, 100, seed=1)[1] != held_out
    with pytest.raises(ValueError):
        carve_split(sentences[:3], 3)


PROBE = dict(spent_seconds=20.0, step_seconds=0.1, steps_per_epoch=1000, validation_seconds=5.0,
             eval_fixed_seconds=30.0, eval_seconds_per_sample=1.0, latent_dim=32)


@pytest.mark.parametrize("goal", ["likelihood", "balanced", "editable"])
def test_the_plan_fits_the_budget_and_every_stage_is_a_valid_config(goal):
    plan = plan_budget(goal=goal, budget_seconds=3600, **PROBE)
    # K: the largest choice whose cost fits EVAL_SHARE of the budget (30 + 200 s <= 432 s < 30 + 500 s)
    assert plan.iw_samples == 200 and plan.eval_seconds == 230
    total = plan.spent_seconds + plan.training_seconds + plan.eval_seconds + plan.margin_seconds
    assert total <= 3600 and total > 3600 - 2 * (PROBE["step_seconds"] + PROBE["validation_seconds"])
    assert plan.margin_seconds == pytest.approx(MARGIN_SHARE * 3600)
    assert len(plan.stages) == (2 if goal == "likelihood" else 1)
    if goal == "likelihood":
        assert plan.stages[0].steps == round(AE_SHARE * plan.steps)
    for stage in plan.stages:
        config = load_layered_config([], list(stage.overrides))
        assert config.train.max_steps == stage.steps and config.train.lr_decay == "wsd"
        assert config.train.lr_decay_steps == round(0.25 * stage.steps)
    assert Plan.from_json(plan.to_json()) == plan
    assert any("stage 1" in line for line in plan.lines())
    # each stage keeps its best checkpoint on what its operating point was measured on: the bound
    # for the likelihood goal's VAE, reconstruction where beta < 1 (a beta-VAE's ELBO worsens as
    # its KL grows, so best-by-ELBO kept an early, low-rate checkpoint) and for the autoencoders
    best = [load_layered_config([], list(stage.overrides)).train.best_metric for stage in plan.stages]
    assert best == {"likelihood": ["rec", "elbo"], "balanced": ["rec"], "editable": ["rec"]}[goal]


def test_the_last_stage_is_resized_to_what_the_earlier_ones_left():
    plan = plan_budget(goal="likelihood", budget_seconds=3600, **PROBE)
    first, last = plan.stages
    validations = math.ceil(first.steps / PROBE["steps_per_epoch"]) * PROBE["validation_seconds"]
    on_time = replan_last_stage(plan, elapsed_seconds=plan.spent_seconds + first.steps * 0.1 + validations, step_seconds=0.1)
    assert abs(on_time.stages[1].steps - last.steps) <= 55  # as planned, within a validation's time
    slower = replan_last_stage(plan, elapsed_seconds=plan.spent_seconds + first.steps * 0.15, step_seconds=0.15)
    assert slower.stages[0] == first and slower.stages[1].steps < 0.7 * last.steps
    left = 3600 - (plan.spent_seconds + first.steps * 0.15) - plan.eval_seconds - plan.margin_seconds
    assert slower.stages[1].steps * 0.15 <= left
    config = load_layered_config([], list(slower.stages[1].overrides))
    assert config.train.max_steps == slower.stages[1].steps
    assert config.annealing.warmup_steps == round(0.2 * slower.stages[1].steps)
    assert replan_last_stage(plan, elapsed_seconds=10_000, step_seconds=0.1).stages[1].steps == last.steps // 10


@pytest.mark.parametrize("goal", ["balanced", "editable"])
def test_a_one_stage_plan_is_resized_after_a_tenth_to_the_speed_it_ran_at(goal):
    # the probe's steps can run slower (new sentence lengths) or faster than training does: a
    # one-stage plan trains a tenth, then takes what is left of the budget at the speed it ran at,
    # changing only train.max_steps (a resumed run may change it; the warm-up is over and the
    # decay, planned in steps, has not begun), so it is the run planned with that length
    plan = plan_budget(goal=goal, budget_seconds=3600, **PROBE)
    (stage,) = plan.stages
    config = load_layered_config([], list(stage.overrides))
    at = measured_steps(plan)
    assert at == round(0.1 * stage.steps) and config.train.lr_warmup_steps <= at < stage.steps - config.train.lr_decay_steps
    assert plan.resizes == 0 and replan_last_stage(plan, elapsed_seconds=1e9, step_seconds=1.0) == plan
    validations = at // PROBE["steps_per_epoch"] * PROBE["validation_seconds"]
    for ran_at in (0.05, 0.1, 0.2):
        elapsed = plan.spent_seconds + at * ran_at + validations
        resized = resize_first_stage(plan, elapsed_seconds=elapsed, step_seconds=ran_at, done_steps=at)
        (after,) = resized.stages
        assert resized.resizes == 1 and Plan.from_json(resized.to_json()) == resized
        # the rest of the budget, its validations included, at the measured speed
        left = 3600 - elapsed - plan.eval_seconds - plan.margin_seconds - PROBE["validation_seconds"]
        more = after.steps - at
        assert more * ran_at + more / PROBE["steps_per_epoch"] * PROBE["validation_seconds"] <= left
        assert (more + 1) * (ran_at + PROBE["validation_seconds"] / PROBE["steps_per_epoch"]) > left
        changed = [(old, new) for old, new in zip(stage.overrides, after.overrides) if old != new]
        assert changed == ([] if after.steps == stage.steps else [(f"train.max_steps={stage.steps}", f"train.max_steps={after.steps}")])
        resumed = load_layered_config([], list(after.overrides))
        assert (resumed.train.lr_warmup_steps, resumed.train.lr_decay_steps) == (config.train.lr_warmup_steps, config.train.lr_decay_steps)
        if ran_at == 0.1:  # as the probe said: as planned, within a validation's time
            assert abs(after.steps - stage.steps) <= 55
        else:
            assert (after.steps > 1.8 * stage.steps) if ran_at < 0.1 else (after.steps < 0.6 * stage.steps)
    # far slower than the probe: never so short that the decay would have had to begin already
    late = resize_first_stage(plan, elapsed_seconds=3500, step_seconds=5.0, done_steps=at)
    assert late.stages[0].steps == at + config.train.lr_decay_steps
    # then again at half of the resized stage, and no more
    once = resize_first_stage(plan, elapsed_seconds=plan.spent_seconds + at * 0.05, step_seconds=0.05, done_steps=at)
    assert measured_steps(once) == round(0.5 * once.stages[0].steps)
    twice = resize_first_stage(once, elapsed_seconds=plan.spent_seconds + measured_steps(once) * 0.05, step_seconds=0.05,
                                done_steps=measured_steps(once))
    assert twice.resizes == 2 and measured_steps(twice) is None


def test_a_two_stage_plan_is_laid_out_again_from_its_first_stage_s_first_tenth():
    # the PTB 180-minute run of 2026-12-03 (evening): the probe said 54.5 ms a step, the first
    # stage ran at about 80; planned to its end it would have hit its time cap with its decay not
    # half done. Measured at a tenth, both stages are laid out again at the speed it ran at
    plan = plan_budget(goal="likelihood", budget_seconds=3600, **PROBE)
    first, second = plan.stages
    at = measured_steps(plan)
    assert at == round(0.1 * first.steps)
    for ran_at in (0.05, 0.1, 0.2):
        elapsed = plan.spent_seconds + at * ran_at + at // PROBE["steps_per_epoch"] * PROBE["validation_seconds"]
        resized = resize_first_stage(plan, elapsed_seconds=elapsed, step_seconds=ran_at, done_steps=at)
        one, two = resized.stages
        assert resized.resizes == 1 and Plan.from_json(resized.to_json()) == resized
        left = 3600 - elapsed - plan.eval_seconds - plan.margin_seconds - 2 * PROBE["validation_seconds"]
        more = one.steps + two.steps - at
        per_step = ran_at + PROBE["validation_seconds"] / PROBE["steps_per_epoch"]
        assert more * per_step <= left < (more + 2) * per_step
        assert abs(one.steps / (one.steps + two.steps) - AE_SHARE) < 0.001  # the goal's split kept
        # the first stage (begun) changes only train.max_steps; the second is planned afresh
        changed = [(old, new) for old, new in zip(first.overrides, one.overrides) if old != new]
        assert changed == ([] if one.steps == first.steps else [(f"train.max_steps={first.steps}", f"train.max_steps={one.steps}")])
        config = load_layered_config([], list(two.overrides))
        assert config.train.max_steps == two.steps and config.annealing.warmup_steps == round(0.2 * two.steps)
        assert config.train.lr_decay_steps == round(0.25 * two.steps)
        if ran_at == 0.1:
            assert abs(one.steps - first.steps) <= 40 and abs(two.steps - second.steps) <= 80
        else:
            assert (one.steps > 1.8 * first.steps) if ran_at < 0.1 else (one.steps < 0.6 * first.steps)
    # then at half of the first stage, then once more when the first stage ends, and no more pauses
    once = resize_first_stage(plan, elapsed_seconds=plan.spent_seconds + at * 0.2, step_seconds=0.2, done_steps=at)
    assert measured_steps(once) == round(0.5 * once.stages[0].steps)
    twice = resize_first_stage(once, elapsed_seconds=plan.spent_seconds + measured_steps(once) * 0.2, step_seconds=0.2,
                               done_steps=measured_steps(once))
    assert measured_steps(twice) is None
    assert replan_last_stage(twice, elapsed_seconds=plan.spent_seconds + twice.stages[0].steps * 0.2,
                             step_seconds=0.2).resizes == 3


def test_dropout_rises_to_li_et_al_s_for_a_plan_of_many_epochs():
    sizes = decide_sizes(887_521)
    assert "model.dropout=0.3" in sizes.overrides
    hour, three = (plan_budget(goal="likelihood", budget_seconds=minutes * 60, **PROBE) for minutes in (60, 180))
    assert hour.steps / PROBE["steps_per_epoch"] < LONG_RUN_EPOCHS <= three.steps / PROBE["steps_per_epoch"]
    assert decide_dropout(hour, sizes) is None
    decision = decide_dropout(three, sizes)
    assert decision.overrides == ("model.dropout=0.5",) and f"{three.steps / 1000:.0f} epochs planned" in decision.why
    assert load_layered_config([], [*sizes.overrides, *decision.overrides]).model.dropout == 0.5
    assert decide_dropout(three, decide_sizes(100_000)) is None  # sizes with no dropout keep none


def test_the_step_time_is_measured_over_the_steps_actually_trained():
    # the PTB 180-minute run of 2026-12-03: its autoencoder stage, planned at 52,596 steps of 49.1
    # ms, stopped at its time cap (54.3 min) after 41,691 steps and 32 validations of about 6.5 s;
    # dividing by the planned steps had said 57.1 ms a step, and sized the next stage for that
    seconds, steps, validations = 54.28 * 60, 41_691, 32
    ran_at = measured_step_seconds(seconds, steps, validations, 6.5)
    assert ran_at == pytest.approx((seconds - 32 * 6.5) / 41_691) and 0.073 < ran_at < 0.074
    assert measured_step_seconds(10.0, 0, 0, 1.0) == 10.0 and measured_step_seconds(1.0, 10, 5, 1.0) == 0.0


def test_the_evaluation_shrinks_to_fit_a_short_budget_and_a_budget_too_short_is_refused():
    short = plan_budget(goal="balanced", budget_seconds=300, **PROBE)
    assert short.iw_samples == IW_CHOICES[-1] and short.eval_seconds > EVAL_SHARE * 300  # the smallest K even so
    with pytest.raises(ValueError, match="give more minutes"):
        plan_budget(goal="likelihood", budget_seconds=60, **PROBE)


def test_wsd_rises_holds_and_falls_to_its_floor():
    config = TrainConfig(lr_decay="wsd", learning_rate=1e-3, min_learning_rate=1e-5, max_steps=100, lr_warmup_steps=10,
                         lr_decay_steps=20)
    rates = [wsd_learning_rate(step, config) for step in range(100)]
    assert rates[0] == pytest.approx(1e-4) and rates[9] == pytest.approx(1e-3)
    assert all(rate == 1e-3 for rate in rates[10:80])
    assert rates[99] == pytest.approx(1e-5) and rates[80] == pytest.approx(1e-5 + (1e-3 - 1e-5) * 19 / 20)
    assert all(a >= b for a, b in zip(rates[80:], rates[81:]))


def test_wsd_needs_its_length_and_is_applied_at_every_step(tiny_corpus, tmp_path):
    with pytest.raises(SeqVAEError, match="train.max_steps"):
        tiny_config(tiny_corpus, tmp_path / "no", train={"lr_decay": "wsd"})
    with pytest.raises(SeqVAEError, match="exceed train.max_steps"):
        tiny_config(tiny_corpus, tmp_path / "no", train={"lr_decay": "wsd", "max_steps": 10, "lr_warmup_steps": 6,
                                                          "lr_decay_steps": 6})
    schedule = {"lr_decay": "wsd", "max_steps": 30, "lr_warmup_steps": 5, "lr_decay_steps": 10, "log_every": 1,
                "validation": "elbo", "epochs": 5}
    config = tiny_config(tiny_corpus, tmp_path / "run", train=schedule)
    train(config, progress=False)
    logged = {r["step"]: r["lr"] for r in metrics(tmp_path / "run") if r["split"] == "train"}
    assert sorted(logged) == list(range(1, 31))
    for step, rate in logged.items():  # the record of step s holds the rate its update used
        assert math.isclose(rate, wsd_learning_rate(step - 1, config.train), rel_tol=1e-6)

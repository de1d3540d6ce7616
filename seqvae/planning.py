"""The plan that fits recipes/text/run.py's run into a time budget. Every function here is pure:
the measured step time, the budget and the corpus's decided sizes go in; stages, each with the
config keys it sets and the reason printed beside it, come out.

- :func:`plan_budget`: the stages of the chosen goal (``likelihood``, ``balanced``, ``editable``)
  laid out in steps within the budget, with the learning-rate schedule in fractions of each
  stage (warm-up, stable, decay: ``train.lr_decay = "wsd"``), the validations, and the final
  evaluation, whose importance-weighted K is the largest that fits its share of the budget;
  :func:`replan_last_stage` resizes a later stage to what the earlier ones left;
- :func:`decide_dropout`: dropout by the planned length.

The choices made from the corpus itself (tokens, output layer, length, sizes) are
seqvae.corpus_decisions'.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, replace

from seqvae.corpus_decisions import Decision

GOALS = ("likelihood", "balanced", "editable")

LR_WARMUP_SHARE, LR_DECAY_SHARE = 0.02, 0.25
"""Each stage's learning rate: a linear warm-up over its first 2% of steps (at most 500), then
constant, then a linear decay to 1e-5 over its last quarter."""
KL_WARMUP_SHARE = 0.2
"""A VAE stage raises the KL weight linearly from 0 to 1 over its first fifth."""
AE_SHARE = 0.3
"""``likelihood``: the autoencoder stage's share of the training steps (Li et al. 2019 train it to
convergence; in a budget, a third leaves the VAE stage two thirds)."""
EVAL_SHARE = 0.12
"""The final evaluation's share of the budget at most."""
IW_CHOICES = (500, 200, 100, 50, 20, 10)
"""K of the final importance-weighted bound: the largest that fits EVAL_SHARE."""
MARGIN_SHARE = 0.03
"""Budget left unplanned for the noise of measured times."""
MEASURE_SHARES = (0.1, 0.5)
"""A plan's first stage pauses at these shares of its steps, and the plan is laid out again each
time at the step time its steps so far ran at (:func:`resize_first_stage`); a two-stage plan's
last stage is resized once more after the first: the first pause corrects the probe, the others
a machine whose speed drifts."""


@dataclass(frozen=True)
class Stage:
    """One training run of the plan."""

    name: str
    steps: int
    overrides: tuple[str, ...]
    why: str

    @property
    def settings(self) -> dict[str, str]:
        """The overrides as ``{key: value}``."""
        return dict(item.split("=", 1) for item in self.overrides if "=" in item)


def goal_stages(goal: str, steps: int, latent_dim: int, *, first_steps: int | None = None) -> list[Stage]:
    """The stages of a goal over ``steps`` training steps in all (each stage's own schedule
    overrides, to be completed by :func:`schedule_overrides`); ``first_steps``: the first stage's
    steps of a two-stage goal when already fixed (trained), instead of its share."""
    fitted = ("prior.fit=true", "prior.default=fitted")
    if goal == "likelihood":
        ae_steps = first_steps if first_steps is not None else max(round(AE_SHARE * steps), 1)
        vae_steps = max(steps - ae_steps, 1)
        return [
            Stage("autoencoder", ae_steps,
                  ("annealing.schedule=constant", "annealing.beta=0", "objective.free_bits=none", "train.best_metric=rec",
                   "prior.fit=false"),
                  "Li et al. 2019, stage 1: beta = 0 with z sampled, to give the encoder codes worth keeping"),
            Stage("vae", vae_steps,
                  ("annealing.schedule=linear", "annealing.start=0", "annealing.beta=1",
                   f"annealing.warmup_steps={max(round(KL_WARMUP_SHARE * vae_steps), 1)}",
                   "objective.free_bits=per_example", "objective.free_bits_lambda=0.25", "train.best_metric=elbo",
                   "train.init_parts=encoder,posterior,decoder"),
                  f"stage 2: the whole autoencoder as its start, KL weight 0 to 1 over a fifth, free bits 0.25 nats "
                  f"per dimension ({0.25 * latent_dim:g} in all) as Li et al.'s code applies them; their decoder "
                  f"starts afresh, which in a budget leaves it a third less time to learn"),
        ]
    if goal == "balanced":
        return [Stage("vae", steps,
                      ("annealing.schedule=constant", "annealing.beta=0.1", "objective.free_bits=none", "train.best_metric=rec",
                       *fitted),
                      "beta = 0.1 (Higgins et al. 2017), best checkpoint on reconstruction as the operating point was "
                      "measured (its ELBO worsens as its KL grows): on the embedded corpus reconstruction BLEU 57.8 with "
                      "a usable bound under the fitted prior, recipes/quickstart/OPERATING_POINTS.md")]
    if goal == "editable":
        return [Stage("autoencoder", steps,
                      ("annealing.schedule=constant", "annealing.beta=0", "objective.free_bits=none", "train.best_metric=rec",
                       *fitted),
                      "beta = 0, an autoencoder with z sampled, drawn from through its fitted prior; on the embedded "
                      "corpus reconstruction BLEU 91.3, homotopy endpoints 87.9, edits that keep the content, "
                      "recipes/quickstart/OPERATING_POINTS.md")]
    raise ValueError(f"unknown goal '{goal}'; choose from {', '.join(GOALS)}")


def schedule_overrides(steps: int) -> tuple[str, ...]:
    """A stage of ``steps`` steps: warm-up, stable, decay, and a step budget in place of epochs."""
    warmup = min(round(LR_WARMUP_SHARE * steps), 500)
    decay = round(LR_DECAY_SHARE * steps)
    return ("train.lr_decay=wsd", f"train.max_steps={steps}", f"train.lr_warmup_steps={warmup}",
            f"train.lr_decay_steps={decay}", "train.min_learning_rate=1e-5", "train.epochs=100000")


@dataclass(frozen=True)
class Plan:
    """Where the budget goes. Seconds are estimates from the measured step and evaluation times."""

    goal: str
    budget_seconds: float
    spent_seconds: float
    """Before the plan: reading the corpus, the tokenizer, the probe."""
    step_seconds: float
    steps_per_epoch: int
    validation_seconds: float
    """One validation during training."""
    iw_samples: int
    eval_seconds: float
    """The final evaluation, with iw_samples, and what follows it (prior, samples, report)."""
    margin_seconds: float
    latent_dim: int = 32
    stages: list[Stage] = field(default_factory=list)
    resizes: int = 0
    """How often the plan has been laid out again at the step time training ran at: at each of
    MEASURE_SHARES of the first stage's steps, and a two-stage plan once more after its first."""
    ran_step_seconds: float | None = None
    """The step time training ran at when the plan was last laid out again (None before): kept
    in the plan so that a sitting that continues it sets each stage's time cap from it, as the
    sitting that measured it did, and not from the probe's figure."""

    @property
    def cap_step_seconds(self) -> float:
        """The step time each stage's time cap is set from: the slower of the probe's and the
        last measured."""
        return max(self.ran_step_seconds or 0.0, self.step_seconds)

    @property
    def steps(self) -> int:
        return sum(stage.steps for stage in self.stages)

    @property
    def training_seconds(self) -> float:
        validations = sum(math.ceil(stage.steps / self.steps_per_epoch) for stage in self.stages)
        return self.steps * self.step_seconds + validations * self.validation_seconds

    def lines(self) -> list[str]:
        """The plan as a user reads it before training."""
        minutes = lambda seconds: f"{seconds / 60:.1f} min"  # noqa: E731
        out = [f"budget {minutes(self.budget_seconds)}: {minutes(self.spent_seconds)} spent reading and measuring, "
               f"{minutes(self.training_seconds)} training, {minutes(self.eval_seconds)} final evaluation (K = {self.iw_samples}), "
               f"{minutes(self.margin_seconds)} margin",
               f"measured: {1000 * self.step_seconds:.1f} ms a step, {self.steps_per_epoch} steps an epoch, "
               f"{self.validation_seconds:.1f} s a validation"]
        for index, stage in enumerate(self.stages, 1):
            lr = stage.settings
            out.append(f"stage {index}, {stage.name}: {stage.steps:,} steps ({stage.steps / self.steps_per_epoch:.1f} epochs, "
                       f"{minutes(stage.steps * self.step_seconds)}); learning rate up over {lr.get('train.lr_warmup_steps', 0)} "
                       f"steps, down over the last {lr.get('train.lr_decay_steps', 0)}; {stage.why}")
        return out

    def to_json(self) -> dict:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict) -> Plan:
        stages = [Stage(s["name"], s["steps"], tuple(s["overrides"]), s["why"]) for s in data["stages"]]
        return cls(**{**data, "stages": stages})


def plan_budget(
    *, goal: str, budget_seconds: float, spent_seconds: float, step_seconds: float, steps_per_epoch: int,
    validation_seconds: float, eval_fixed_seconds: float, eval_seconds_per_sample: float, latent_dim: int,
) -> Plan:
    """Lay the goal's stages out in what is left of the budget.

    The final evaluation gets the largest K of IW_CHOICES whose cost (``eval_fixed_seconds`` +
    K x ``eval_seconds_per_sample``) fits EVAL_SHARE of the budget (the smallest K if none does);
    MARGIN_SHARE is kept back; the rest trains, one validation per epoch and one at each stage's
    end included: steps = rest / (step_seconds + validation_seconds / steps_per_epoch), less a
    validation per stage. Raises ValueError when fewer than 10 steps a stage would remain."""
    if goal not in GOALS:
        raise ValueError(f"unknown goal '{goal}'; choose from {', '.join(GOALS)}")
    eval_cap = EVAL_SHARE * budget_seconds
    iw_samples = next((k for k in IW_CHOICES if eval_fixed_seconds + k * eval_seconds_per_sample <= eval_cap), IW_CHOICES[-1])
    eval_seconds = eval_fixed_seconds + iw_samples * eval_seconds_per_sample
    margin = MARGIN_SHARE * budget_seconds
    stage_count = 2 if goal == "likelihood" else 1
    rest = budget_seconds - spent_seconds - eval_seconds - margin - stage_count * validation_seconds
    steps = int(rest / (step_seconds + validation_seconds / max(steps_per_epoch, 1))) if rest > 0 else 0
    if steps < 10 * stage_count:
        raise ValueError(
            f"a budget of {budget_seconds / 60:.1f} min leaves {max(rest, 0) / 60:.1f} min to train after reading, "
            f"measuring and the final evaluation ({eval_seconds / 60:.1f} min): fewer than {10 * stage_count} steps "
            f"of {1000 * step_seconds:.0f} ms; give more minutes"
        )
    stages = [
        Stage(stage.name, stage.steps, (*stage.overrides, *schedule_overrides(stage.steps)), stage.why)
        for stage in goal_stages(goal, steps, latent_dim)
    ]
    return Plan(goal=goal, budget_seconds=budget_seconds, spent_seconds=spent_seconds, step_seconds=step_seconds,
                steps_per_epoch=steps_per_epoch, validation_seconds=validation_seconds, iw_samples=iw_samples,
                eval_seconds=eval_seconds, margin_seconds=margin, latent_dim=latent_dim, stages=stages)


LONG_RUN_EPOCHS = 60
"""A plan of at least this many epochs in all trains with dropout 0.5 where the sizes decided 0.3."""


def decide_dropout(plan: Plan, sizes: Decision) -> Decision | None:
    """Dropout by the planned length: the sizes' 0.3 learns fastest in an hour, and over longer it
    overfits; a plan of LONG_RUN_EPOCHS epochs or more gets Li et al.'s 0.5. On PTB, at one thread:
    in 60 minutes (35 epochs) 0.3 gave validation IW-PPL 117.5 against 128.2 at 0.5 with rate
    1e-3; in a 180-minute run (122 epochs planned) the VAE stage at 0.3 sat at a validation ELBO of
    108.8 to 109.0 from its epoch 31 to its epoch 67, while the ``ae-fb`` row at 0.5 went on to 105.5;
    the 180-minute run at 0.5 (98 epochs) ended at 106.5, validation IW-PPL 114.19 at K = 50
    (recipes/text/README.md). None where the sizes set no dropout of 0.3 or the plan is shorter."""
    if "model.dropout=0.3" not in sizes.overrides:
        return None
    epochs = plan.steps / max(plan.steps_per_epoch, 1)
    if epochs < LONG_RUN_EPOCHS:
        return None
    return Decision("dropout", "0.5", ("model.dropout=0.5",),
                    f"{epochs:.0f} epochs planned, at least {LONG_RUN_EPOCHS}: dropout 0.3 overfits over that many on PTB "
                    "(its validation ELBO flat from the VAE stage's epoch 31) where Li et al.'s 0.5 keeps improving")


def replan_last_stage(plan: Plan, *, elapsed_seconds: float, step_seconds: float) -> Plan:
    """The plan with its last stage resized to what is left of the budget once the earlier
    stages took ``elapsed_seconds`` since the start, at the step time they ran at
    (``step_seconds``): a machine slower or faster than the probe measured moves the last stage's
    end, and with it the point where its learning rate decays, so the budget still holds. The
    last stage keeps at least a tenth of its planned steps."""
    if len(plan.stages) < 2:
        return plan
    earlier = sum(stage.steps for stage in plan.stages[:-1])
    rest = plan.budget_seconds - elapsed_seconds - plan.eval_seconds - plan.margin_seconds - plan.validation_seconds
    steps = int(rest / (step_seconds + plan.validation_seconds / max(plan.steps_per_epoch, 1))) if rest > 0 else 0
    steps = max(steps, plan.stages[-1].steps // 10, 1)
    stages = [
        Stage(stage.name, stage.steps, (*stage.overrides, *schedule_overrides(stage.steps)), stage.why)
        for stage in goal_stages(plan.goal, earlier + steps, plan.latent_dim, first_steps=plan.stages[0].steps)
    ]
    return replace(plan, stages=[*plan.stages[:-1], stages[-1]], resizes=plan.resizes + 1, ran_step_seconds=step_seconds)


def measured_step_seconds(train_seconds: float, steps: int, validations: int, validation_seconds: float) -> float:
    """The seconds a training step really took: ``train_seconds`` of training, less its
    ``validations``, over the ``steps`` actually trained (fewer than planned when a stage stopped
    at its time cap on a machine slower than the probe said)."""
    return max(train_seconds - validations * validation_seconds, 0.0) / max(steps, 1)


def measured_steps(plan: Plan) -> int | None:
    """Where a plan's first stage pauses next to measure its real step time: the next of
    MEASURE_SHARES of its steps, at least its warm-up and before its decay; None when it has
    paused at each."""
    if plan.resizes >= len(MEASURE_SHARES):
        return None
    stage = plan.stages[0]
    settings = stage.settings
    warmup, decay = int(settings.get("train.lr_warmup_steps", 0)), int(settings.get("train.lr_decay_steps", 0))
    return max(min(round(MEASURE_SHARES[plan.resizes] * stage.steps), stage.steps - decay), min(warmup, stage.steps), 1)


def resize_first_stage(plan: Plan, *, elapsed_seconds: float, step_seconds: float, done_steps: int) -> Plan:
    """The plan, ``done_steps`` of its first stage trained in ``elapsed_seconds`` since the start
    at ``step_seconds`` a step, laid out again in what is left of the budget at that speed.

    The first stage changes only ``train.max_steps`` (a key a resumed run may change): its warm-up
    is over and its decay keeps its planned length, so it is exactly the run that would have been
    planned with its length from the start; it never ends before its decay could begin after
    ``done_steps`` (a machine far slower than the probe is then stopped by the stage's time cap).
    A two-stage plan keeps its goal's split of the steps and plans its second stage afresh (it has
    not begun); it is resized once more when the first ends (:func:`replan_last_stage`)."""
    first = plan.stages[0]
    decay = int(first.settings.get("train.lr_decay_steps", 0))
    rest = (plan.budget_seconds - elapsed_seconds - plan.eval_seconds - plan.margin_seconds
            - len(plan.stages) * plan.validation_seconds)
    more = int(rest / (step_seconds + plan.validation_seconds / max(plan.steps_per_epoch, 1))) if rest > 0 else 0
    total = done_steps + more
    share = 1.0 if len(plan.stages) == 1 else goal_stages(plan.goal, total, plan.latent_dim)[0].steps / max(total, 1)
    steps = max(round(share * total), done_steps + decay, 1)
    overrides = tuple(f"train.max_steps={steps}" if item.startswith("train.max_steps=") else item for item in first.overrides)
    later = [
        Stage(stage.name, stage.steps, (*stage.overrides, *schedule_overrides(stage.steps)), stage.why)
        for stage in goal_stages(plan.goal, total, plan.latent_dim, first_steps=steps)[1:]
    ] if len(plan.stages) > 1 else []
    return replace(plan, stages=[Stage(first.name, steps, overrides, first.why), *later], resizes=plan.resizes + 1,
                   ran_step_seconds=step_seconds)

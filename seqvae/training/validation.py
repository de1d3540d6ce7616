"""Validation during training: the measures of ``train.validation`` (every measure of ``seqvae
eval``, or the ELBO terms only) with z drawn from generators of their own seeded by (seed, epoch),
so that validating never perturbs training randomness, and the figure that picks best.pt."""

from __future__ import annotations

from typing import Any

import torch

from seqvae.evaluation import evaluate_elbo, evaluate_split, free_bits_target
from seqvae.measures import diagnose
from seqvae.training.metrics import round_figure
from seqvae.training.stopping import ValidationInterrupted


def validation_generator(seed: int, epoch: int) -> torch.Generator:
    generator = torch.Generator()
    generator.manual_seed(seed * 7_919 + epoch + 1)
    return generator


def selection_value(model, config, valid: dict[str, Any]) -> float:
    """The validation figure that picks best.pt and drives the plateau decay: ``train.best_metric``,
    or the exact NLL of a language model (which has neither ELBO nor reconstruction)."""
    return valid["nll"] if model.is_language_model else valid[config.train.best_metric]


def validate(trainer, *, epoch_end: bool = False, stopped_by: str | None = None) -> dict[str, Any]:
    """Measure, tell the parts (aggressive training's switch), warn and log one validation."""
    world, device, stops = trainer.world, trainer.device, trainer.stops
    # Alone, a process may stop in the middle of a validation (under torchrun the ranks would
    # leave their collectives at different points): nothing of the trainer changes before the
    # figures are in, and the generators go back to where they stood, so the checkpoint saved
    # at the signal holds the state of the step before the validation.
    generators = (torch.get_rng_state(), torch.cuda.get_rng_state_all() if device.type == "cuda" else None)
    stops.validating = not world.launched
    try:
        if world.parallel and shared_validation(trainer.model):
            valid, warnings = trainer.measure_validation(shared=True)
        else:
            valid, warnings = world.broadcast(trainer.measure_validation() if world.main else None)
    except ValidationInterrupted:
        torch.set_rng_state(generators[0])
        if generators[1] is not None:
            torch.cuda.set_rng_state_all(generators[1])
        raise
    finally:
        stops.validating = False
    position = trainer.state
    position.valid, position.valid_step = valid, position.step
    annealing = trainer.config.annealing
    autoencoder = annealing.schedule == "constant" and annealing.beta == 0
    for warning in warnings:
        if autoencoder and warning.startswith("information overload"):
            # with no KL term nothing keeps the posteriors wide: the expected state, not a fault;
            # said once a sitting (metrics.jsonl keeps it at every validation)
            if not trainer.overload_noted:
                trainer.say(f"note (epoch {position.epoch + 1}): {warning}, as expected of an autoencoder "
                            "(annealing.beta = 0); not repeated at later validations")
                trainer.overload_noted = True
        else:
            trainer.say(f"WARNING (epoch {position.epoch + 1}): {warning}")
    record = {"split": "valid", "step": position.step, "epoch": position.epoch + 1}
    if stopped_by:  # a validation where a budget stopped the run, not at an epoch's end
        record["stopped_by"] = stopped_by
    for part in trainer.parts:
        part.after_validation(trainer, valid, record, epoch_end=epoch_end)
    record = {**record, **{key: round_figure(value) for key, value in valid.items()}, "warnings": warnings}
    trainer.metrics.write(record)
    if trainer.watch is not None:
        trainer.watch.validation(record)
    return valid


def shared_validation(model) -> bool:
    """Whether the ranks share the validation batches (a Gaussian posterior or a language
    model); with a flow posterior rank 0 measures the whole set."""
    return model.is_language_model or model.posterior.flow is None


def measure(trainer, *, shared: bool = False) -> tuple[dict[str, Any], list[str]]:
    """The validation figures and warnings, those of one process either way. Under torchrun
    the ranks share the validation batches (seqvae.evaluation), or with a flow posterior
    rank 0 measures the whole set while the others wait, then sends the figures."""
    config, model, data = trainer.config, trainer.model, trainer.data
    batches = data.batches("valid", config.train.eval_batch_size)
    target = free_bits_target(config.objective, model.latent_dim)
    world = trainer.world if shared else None
    epoch = trainer.state.epoch
    if config.train.validation == "full":
        valid = evaluate_split(
            model,
            list(batches),
            data.tokenizer,
            iw_samples=config.train.validation_iw_samples,
            prior_samples=config.train.validation_prior_samples,
            free_bits_target=target,
            seed=config.run.seed * 7_919 + epoch + 1,
            words=data.splits["valid"].words,
            progress=trainer.progress,
            world=world,
        )
        return valid, valid.pop("warnings")
    valid = evaluate_elbo(
        model, list(batches), generator=validation_generator(config.run.seed, epoch), progress=trainer.progress, world=world
    )
    warnings = [] if model.is_language_model else diagnose(
        kl=valid["kl"], active=valid["active_units"], mean_posterior_std=valid["mean_posterior_std"], free_bits_target=target
    )
    return valid, warnings

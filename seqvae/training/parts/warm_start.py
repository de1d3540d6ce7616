"""``train.init_from``: a warm start (Li et al. 2019): the parts ``train.init_parts`` names are
copied from the best checkpoint of another run before the first step of a new run; the other parts
keep the initialisation drawn from the seed."""

from __future__ import annotations

from pathlib import Path

from seqvae.checkpoints import check_vocabulary, load_checkpoint
from seqvae.errors import SeqVAEError
from seqvae.models.vae import SeqVAE
from seqvae.run_directory import BEST, CHECKPOINT_DIR
from seqvae.training.parts import Part


class WarmStart(Part):
    def fresh_start(self, trainer) -> None:
        """Copy the parts (the other ranks receive the weights when the data-parallel part starts)."""
        config = trainer.config.train
        copied = load_parts(trainer.model, config.init_from, config.init_parts, trainer.tokenizer)
        trainer.say(f"warm start: {', '.join(config.init_parts)} ({copied} tensors) from {config.init_from}")


def load_parts(model: SeqVAE, run_dir: str | Path, parts: tuple[str, ...], tokenizer) -> int:
    """Copy the named parts (``encoder``, ``posterior``, ``posterior.projection``, ``decoder``:
    every parameter and buffer under that module) from the best checkpoint of another run into
    ``model``, leaving the rest as they are; returns the number of tensors copied. The two runs'
    vocabularies must be the same and each copied part must have the same shapes in both models,
    else a one-line error."""
    run_dir = Path(run_dir)
    what = f"train.init_from={run_dir}"
    path = run_dir / CHECKPOINT_DIR / BEST
    if not run_dir.is_dir():
        raise SeqVAEError(f"{what}: run directory not found")
    if not path.is_file():
        raise SeqVAEError(f"{what}: no {CHECKPOINT_DIR}/{BEST} to start from (the run has not finished an epoch)")
    payload = load_checkpoint(path)
    check_vocabulary(path, payload, tokenizer)
    # a weight-dropped LSTM keeps weight_hh_lK as parametrizations.weight_hh_lK.original: the same
    # tensor under another name, so a part copies between runs with and without model.weight_drop
    source = {_plain_key(key): value for key, value in payload["model"].items()}
    own = model.state_dict()
    names = {_plain_key(key): key for key in own}
    state = {plain: own[key] for plain, key in names.items()}
    copied = 0
    for part in parts:
        prefix = f"{part}."
        wanted = {key for key in state if key.startswith(prefix)}
        given = {key for key in source if key.startswith(prefix)}
        if not wanted or not given:
            owner = "this model" if not wanted else "that run"
            raise SeqVAEError(f"{what}: {owner} has no {part} (a language model has only a decoder)")
        if wanted != given:
            differing = sorted(wanted ^ given)[0]
            hint = ("; or name posterior.projection in train.init_parts to copy the Gaussian projection alone"
                    if part == "posterior" and "posterior.projection.weight" in wanted & given else "")
            raise SeqVAEError(f"{what}: the {part} differs from this run's ({differing} is in one model only); "
                              f"use the same [model] settings for it{hint}")
        for key in sorted(wanted):
            if source[key].shape != state[key].shape:
                raise SeqVAEError(
                    f"{what}: {key} has shape {tuple(source[key].shape)} there and {tuple(state[key].shape)} here; "
                    f"use the same [model] sizes for the {part}"
                )
            state[key] = source[key]
            copied += 1
    model.load_state_dict({names[key]: value for key, value in state.items()})
    return copied


def _plain_key(key: str) -> str:
    """A state-dict key without torch's parametrisation wrapping: ``a.parametrizations.w.original``
    -> ``a.w`` (seqvae.models.decoders.DropConnect); any other key as it is."""
    head, found, tail = key.partition(".parametrizations.")
    if found and tail.endswith(".original") and "." not in tail.removesuffix(".original"):
        return f"{head}.{tail.removesuffix('.original')}"
    return key

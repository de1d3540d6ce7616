"""A trained model as a folder to hand to someone: weights in safetensors (tensors only, no
pickled code, no optimizer state), the resolved config, the tokenizer, the ex-post prior where the
run has one, and a model card (``README.md``) written from the run. :func:`seqvae.load_run` and
every command that reads a run accept the folder; loading it never unpickles anything.

    OUT/model.safetensors   the weights of one checkpoint, with its step, epoch and vocabulary
                            fingerprint in the file's metadata
    OUT/config.toml         the run's resolved config
    OUT/tokenizer.json      (and tokenizer.model for SentencePiece)
    OUT/prior.json          the fitted prior, where the run has one
    OUT/data.json           the corpus counts, where the run has them
    OUT/README.md           the model card
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import torch

from seqvae.errors import SeqVAEError
from seqvae.files import atomic_write_bytes, atomic_write_text, cannot_write

WEIGHTS_FILE = "model.safetensors"
DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


def is_exported(folder: str | Path) -> bool:
    """An exported model folder (as opposed to a run directory)."""
    return (Path(folder) / WEIGHTS_FILE).is_file()


def export_run(run_dir: str | Path, out_dir: str | Path, *, checkpoint: str = "best", dtype: str = "float32",
               overwrite: bool = False) -> Path:
    """Write the model folder of ``run_dir``'s ``checkpoint`` into ``out_dir``; returns its path."""
    from safetensors.torch import save

    from seqvae import __version__
    from seqvae.fitted_prior import PRIOR_FILE
    from seqvae.run_directory import CONFIG_FILE, DATA_FILE, load_checkpointed_model

    if dtype not in DTYPES:
        raise SeqVAEError(f"--dtype {dtype}: choose one of {', '.join(DTYPES)}")
    run_dir, out_dir = Path(run_dir), Path(out_dir)
    if is_exported(run_dir):
        raise SeqVAEError(f"{run_dir}: already an exported model folder; export reads a run directory")
    if out_dir.exists() and any(out_dir.iterdir()) and not overwrite:
        raise SeqVAEError(f"{out_dir}: exists; pass --overwrite to replace it")
    model, tokenizer, config, info = load_checkpointed_model(run_dir, checkpoint=checkpoint, device="cpu")
    tensors = {name: tensor.detach().to(DTYPES[dtype] if tensor.is_floating_point() else tensor.dtype).contiguous()
               for name, tensor in model.state_dict().items()}
    metadata = {"format": "seqvae-model-1", "seqvae_version": __version__, "step": str(info.step), "epoch": str(info.epoch),
                "checkpoint": info.path.name, "dtype": dtype, "vocab_size": str(tokenizer.vocab_size),
                "vocab_fingerprint": str(tokenizer.fingerprint)}
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise cannot_write(out_dir, error) from None
    atomic_write_bytes(out_dir / WEIGHTS_FILE, save(tensors, metadata=metadata))
    atomic_write_text(out_dir / CONFIG_FILE, (run_dir / CONFIG_FILE).read_text(encoding="utf-8"))
    for name, content in tokenizer.files().items():
        atomic_write_bytes(out_dir / name, content)
    if (run_dir / DATA_FILE).is_file():
        shutil.copyfile(run_dir / DATA_FILE, out_dir / DATA_FILE)
    prior = _prior_of(run_dir / PRIOR_FILE, info)
    if prior is not None:  # fitted to the exported checkpoint: it now belongs to model.safetensors
        atomic_write_text(out_dir / PRIOR_FILE, json.dumps(prior, indent=1) + "\n")
    from seqvae.report import saved_evaluations

    evaluations = saved_evaluations(run_dir)
    atomic_write_text(out_dir / "README.md", model_card(run_dir, out_dir, config, info, tensors, dtype, evaluations))
    return out_dir


def load_exported(folder: Path, device: torch.device | str = "cpu"):
    """(model, tokenizer, config, CheckpointInfo) of an exported folder: safetensors only."""
    from safetensors import safe_open
    from safetensors.torch import load_file

    from seqvae.data.tokenizers import load_tokenizer
    from seqvae.models.vae import build_model
    from seqvae.run_directory import CheckpointInfo, load_run_config

    path = folder / WEIGHTS_FILE
    config = load_run_config(folder)
    tokenizer = load_tokenizer(folder)
    try:
        with safe_open(str(path), framework="pt") as handle:
            metadata = handle.metadata() or {}
        state = load_file(str(path))
    except Exception as error:  # safetensors raises its own error types for a damaged file
        raise SeqVAEError(f"{path}: not a readable safetensors file ({str(error).splitlines()[0][:120]})") from None
    if metadata.get("vocab_fingerprint") != str(tokenizer.fingerprint):
        raise SeqVAEError(f"{path}: the weights were exported with another vocabulary than {folder / 'tokenizer.json'}")
    model = build_model(config.model, vocab_size=tokenizer.vocab_size, pad_id=tokenizer.pad_id, unk_id=tokenizer.unk_id)
    from seqvae.checkpoints import load_model_state

    load_model_state(path, model, state)  # copied into the fp32 parameters whatever the exported dtype
    model.to(device).eval()
    info = CheckpointInfo(path=path, step=int(metadata.get("step", 0)), epoch=int(metadata.get("epoch", 0)), asked="best")
    return model, tokenizer, config, info


def _prior_of(path: Path, info) -> dict[str, Any] | None:
    """The run's fitted prior, renamed to the exported weights, if it was fitted to the exported
    checkpoint; None otherwise (a prior of other weights would mislead)."""
    if not path.is_file():
        return None
    prior = json.loads(path.read_text(encoding="utf-8"))
    fitted_to = prior.get("fit", {}).get("checkpoint", {})
    if (fitted_to.get("file"), fitted_to.get("step")) != (info.path.name, info.step):
        return None
    prior["fit"]["checkpoint"] = {**fitted_to, "file": WEIGHTS_FILE}
    return prior


CARD_FIGURES = ("ppl_iw", "nll_iw", "ppl_iw_fitted", "elbo", "rec", "kl", "mi", "active_units", "bleu")


def model_card(run_dir: Path, out_dir: Path, config, info, tensors: dict[str, torch.Tensor], dtype: str,
               evaluations: list[dict[str, Any]]) -> str:
    """The README.md of an exported folder: what the model is, what it was trained on and how, its
    measured figures with the commands that produced them, and how to load it."""
    from seqvae import __version__

    model, objective, annealing, train = config.model, config.objective, config.annealing, config.train
    parameters = sum(tensor.numel() for tensor in tensors.values())
    size = sum(tensor.numel() * tensor.element_size() for tensor in tensors.values())
    lines = [
        "---",  # the hub's model-card metadata
        "library_name: seqvae",
        "tags:",
        "- seqvae",
        "- variational-autoencoder",
        "- text-generation",
        "---",
        "",
        f"# {out_dir.name}: a seqvae sentence VAE",
        "",
        f"Exported by seqvae {__version__} from `{run_dir}`, checkpoint `{info.path.name}` (step {info.step}, "
        f"{info.epoch} epochs), weights in {dtype} ({parameters:,} parameters, {size / 2**20:.1f} MiB).",
        "",
        "## Model",
        "",
        f"- {model.encoder} encoder, {model.decoder} decoder; embedding {model.embedding_dim}, hidden {model.hidden_dim}, "
        f"latent {model.latent_dim} ({model.posterior} posterior, flow {model.flow}); output layer {model.output_layer}",
        f"- objective: word dropout {objective.word_dropout}, free bits {objective.free_bits} (lambda {objective.free_bits_lambda}); "
        f"KL weight {annealing.schedule} to {annealing.beta}",
        f"- training: {train.optimizer}, learning rate {train.learning_rate}, batch {train.batch_size}, "
        f"{train.epochs} epochs at most",
        f"- data: `{config.data.train}` (tokenizer: {config.tokenizer.kind})",
        "",
        "## Measured",
        "",
    ]
    if not evaluations:
        lines.append("No evaluation was kept in the run (`seqvae eval RUN` keeps one).")
    for evaluation in evaluations:
        figures = evaluation.get("metrics", {})
        settings = evaluation.get("settings", {})
        shown = ", ".join(f"{key} {figures[key]:.4g}" for key in CARD_FIGURES if isinstance(figures.get(key), (int, float)))
        command = f"seqvae eval {run_dir} --split {evaluation.get('split')} --checkpoint {evaluation.get('checkpoint')}"
        if "iw_samples" in settings:
            command += f" --iw-samples {settings['iw_samples']}"
        lines += [f"- {evaluation.get('split')} split, {evaluation.get('checkpoint')} checkpoint: {shown}",
                  f"  (`{command}`)"]
    lines += [
        "",
        "## Load it",
        "",
        "```python",
        "from seqvae import load_run",
        "",
        f'run = load_run("{out_dir.name}")',
        "print(run.sample(5))",
        "```",
        "",
        f"or `seqvae sample {out_dir.name} -n 5`, `seqvae interpolate {out_dir.name} \"A\" \"B\"`. The weights load without "
        "unpickling anything (safetensors).",
        "",
        f"Shared on the Hugging Face hub (`seqvae push {out_dir.name} OWNER/NAME`, with `pip install 'seqvae[hub]'`), it loads "
        'as `load_run("hf://OWNER/NAME")`, and every command takes `hf://OWNER/NAME` in place of the folder.',
        "",
    ]
    return "\n".join(lines)

"""The files a training writes into its run directory (the layout is seqvae.run_directory's):
the checks made before anything is written, so that no earlier work is lost, the fresh directory,
and the resolved config and data counts saved at the start of every sitting."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

from seqvae.config import Config, config_to_dict, config_to_toml, load_config
from seqvae.errors import SeqVAEError
from seqvae.files import atomic_write_json, atomic_write_text
from seqvae.run_directory import BEST, CHECKPOINT_DIR, CONFIG_FILE, DATA_FILE, LAST

RESUMABLE_CHANGES = {
    ("train", "epochs"),
    ("train", "max_steps"),
    ("train", "max_minutes"),
    ("train", "stop_after_decays"),
    ("train", "cuda_graphs"),
    ("train", "cuda_graph_width"),
    ("run", "dir"),
    ("run", "device"),
    ("run", "threads"),
    ("run", "distributed_backend"),
    ("run", "tensorboard"),
    ("prior", "fit"),
    ("prior", "default"),
    ("prior", "components"),
    ("prior", "covariance"),
    ("prior", "codes"),
}
"""Config keys a resumed run may change: how long to train, and where and how the steps run
(``run.dir`` too: a run directory that was moved or copied resumes where it now is, and its saved
config says so; a run begun on the CPU may go on with CUDA graphs on a GPU, whose draws differ)."""


def _resumable() -> str:
    return ", ".join(f"{section}.{key}" for section, key in sorted(RESUMABLE_CHANGES))


def check_run_dir(config: Config, run_dir: Path, *, resume: bool, overwrite: bool) -> None:
    """Refuse what would lose work, before anything is written."""
    if run_dir.exists() and not run_dir.is_dir():
        raise SeqVAEError(f"{run_dir}: run directory path is a file")
    if resume:
        if not (run_dir / CHECKPOINT_DIR / LAST).is_file():
            best = run_dir / CHECKPOINT_DIR / BEST
            also = f"; {best} is there: train a new run from its weights with train.init_from={run_dir}" if best.is_file() else ""
            raise SeqVAEError(f"{run_dir}: nothing to resume (no {CHECKPOINT_DIR}/{LAST}){also}")
        check_resumable(run_dir, load_config(run_dir / CONFIG_FILE), config)
    elif run_dir.exists() and any(run_dir.iterdir()):
        if not overwrite:
            raise SeqVAEError(f"{run_dir}: run directory exists; pass --resume to continue it or --overwrite to replace it")
        if not (run_dir / CONFIG_FILE).is_file():
            raise SeqVAEError(f"{run_dir}: exists and is not a seqvae run directory (no {CONFIG_FILE}); refusing to replace it")


def check_resumable(run_dir: Path, saved: Config, given: Config) -> None:
    """A resumed run may change only :data:`RESUMABLE_CHANGES`."""
    check_resumable_dicts(run_dir / CONFIG_FILE, config_to_dict(saved), config_to_dict(given), run_dir / CONFIG_FILE)


def check_resumable_dicts(source: Path, saved: dict, given: dict, config_file: Path, also: set = frozenset()) -> None:
    """Refuse, naming the key, a ``given`` config (as a dict) that differs from the ``saved`` one
    (the run's config.toml, or the config a checkpoint was trained with) outside
    :data:`RESUMABLE_CHANGES` and ``also``. Keys a release no longer has are passed over."""
    for section, values in saved.items():
        for key, value in values.items():
            if (section, key) in RESUMABLE_CHANGES or (section, key) in also or key not in given.get(section, {}):
                continue
            if given[section][key] != value:
                started = "the run was started with" if source == config_file else f"{source} was trained with"
                raise SeqVAEError(
                    f"{config_file}: cannot resume with {section}.{key}={given[section][key]!r}; "
                    f"{started} {value!r} (only {_resumable()} may change)"
                )


def create_run_dir(run_dir: Path) -> None:
    """A fresh run directory; an old one is removed only now that the new run's input is checked."""
    if run_dir.exists():
        shutil.rmtree(run_dir)
    (run_dir / CHECKPOINT_DIR).mkdir(parents=True)


def save_run_settings(run_dir: Path, config: Config, summary: dict[str, Any]) -> None:
    """The resolved config and the data counts. A resumed run may extend epochs or max_steps: the
    saved config records what now applies."""
    atomic_write_text(run_dir / CONFIG_FILE, config_to_toml(config))
    atomic_write_json(run_dir / DATA_FILE, summary)

"""Sharing an exported model folder (``seqvae export``) on the Hugging Face hub, through the
``huggingface_hub`` client (the ``hub`` extra).

    seqvae push OUT_DIR OWNER/NAME            # create the model repository if needed, upload
    load_run("hf://OWNER/NAME")               # any command that takes a run takes the address
    load_run("hf://OWNER/NAME@REVISION")      # a branch, tag or commit

A push uploads the model's files only (weights, config, tokenizer, fitted prior, corpus counts,
model card), not what using the folder added to it (evaluations, reports, caches). The token is
the client's: ``HF_TOKEN`` or ``hf auth login``.

Fetching goes through the client's own cache (``HF_HOME``; offline with ``HF_HUB_OFFLINE=1``
once a revision is there), then copies the snapshot into a working folder of seqvae's,
``$SEQVAE_HOME/hub/OWNER--NAME/COMMIT`` (``SEQVAE_HOME`` defaults to ``~/.cache/seqvae``). The
hub's cache stays as the client wrote it, and what a command writes into a run (``seqvae eval``'s
kept figures, ``seqvae report``, ``seqvae prior fit``) lands in the working folder, one per commit.
"""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path

from seqvae.errors import SeqVAEError

PREFIX = "hf://"
MODEL_FILES = ("model.safetensors", "config.toml", "tokenizer.json", "tokenizer.model", "prior.json", "data.json", "README.md")
"""The files of an exported folder that a push uploads and a fetch downloads."""
REPO_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*/[A-Za-z0-9][A-Za-z0-9._-]*$")


def is_hub_address(location: str | Path) -> bool:
    return isinstance(location, str) and location.startswith(PREFIX)


def parse_address(address: str) -> tuple[str, str | None]:
    """``hf://OWNER/NAME[@REVISION]`` -> (repository id, revision or None)."""
    rest = address[len(PREFIX):]
    repo_id, _, revision = rest.partition("@")
    if not REPO_ID.match(repo_id) or (_ and not revision):
        raise SeqVAEError(f"{address}: not a hub address; write hf://OWNER/NAME or hf://OWNER/NAME@REVISION")
    return repo_id, revision or None


def check_repo_id(repo_id: str) -> str:
    if not REPO_ID.match(repo_id):
        raise SeqVAEError(f"{repo_id}: not a hub repository id; write OWNER/NAME")
    return repo_id


def _client():
    try:
        import huggingface_hub
        import huggingface_hub.errors
    except ImportError:
        raise SeqVAEError("the huggingface_hub package is not installed; pip install 'seqvae[hub]'") from None
    return huggingface_hub


def _reason(error: Exception) -> str:
    """The first line of the client's message, which names what went wrong."""
    text = str(error).strip().splitlines()
    return f"{type(error).__name__}: {text[0][:200]}" if text else type(error).__name__


def push(folder: str | Path, repo_id: str, *, private: bool = False, revision: str | None = None,
         message: str | None = None, token: str | None = None) -> str:
    """Upload an exported model folder to the hub repository ``repo_id`` (created, private if
    asked, when it does not exist); returns the URL of the commit."""
    from seqvae.export import WEIGHTS_FILE, is_exported

    folder = Path(folder)
    check_repo_id(repo_id)
    if not folder.is_dir():
        raise SeqVAEError(f"{folder}: no such folder; push takes a folder written by seqvae export")
    if not is_exported(folder):
        if (folder / "checkpoints").is_dir():
            raise SeqVAEError(f"{folder}: a run directory; export it first: seqvae export {folder} OUT_DIR, then push OUT_DIR")
        raise SeqVAEError(f"{folder}: holds no {WEIGHTS_FILE}; push takes a folder written by seqvae export")
    files = [name for name in MODEL_FILES if (folder / name).is_file()]
    hub = _client()
    api = hub.HfApi(token=token)
    try:
        api.create_repo(repo_id, repo_type="model", private=private, exist_ok=True)
        if revision:
            api.create_branch(repo_id, branch=revision, repo_type="model", exist_ok=True)
        commit = api.upload_folder(
            folder_path=str(folder), repo_id=repo_id, repo_type="model", revision=revision, allow_patterns=files,
            commit_message=message or f"seqvae push of {folder.name}",
        )
    except Exception as error:  # the client's own errors, and its HTTP library's (no network, refused, timed out)
        raise SeqVAEError(f"push to {repo_id}: {_reason(error)}; nothing was changed there unless the message says so") from None
    return str(getattr(commit, "commit_url", commit))


def working_root() -> Path:
    """Where fetched models are kept as run folders: ``$SEQVAE_HOME/hub``."""
    return Path(os.environ.get("SEQVAE_HOME") or Path.home() / ".cache" / "seqvae") / "hub"


def fetch(address: str) -> Path:
    """The working folder of the model at a hub address, downloaded (or found in the client's
    cache) and copied there if it is not already."""
    repo_id, revision = parse_address(address)
    hub = _client()
    try:
        snapshot = Path(hub.snapshot_download(repo_id, repo_type="model", revision=revision, allow_patterns=list(MODEL_FILES)))
    except Exception as error:  # the client's own errors, and its HTTP library's
        if isinstance(error, hub.errors.RepositoryNotFoundError):
            reason = "no such model repository on the hub, or it is private and no token gives access"
        elif isinstance(error, hub.errors.RevisionNotFoundError):
            reason = f"the repository has no revision '{revision}'"
        elif isinstance(error, hub.errors.LocalEntryNotFoundError):
            reason = "the hub cannot be reached and this revision is not in the local cache (HF_HOME)"
        else:
            reason = _reason(error)
        raise SeqVAEError(f"{address}: {reason}") from None
    if not (snapshot / "model.safetensors").is_file():
        raise SeqVAEError(f"{address}: holds no model.safetensors; not a model written by seqvae export")
    folder = working_root() / repo_id.replace("/", "--") / snapshot.name
    try:
        folder.mkdir(parents=True, exist_ok=True)
        for name in MODEL_FILES:
            if (snapshot / name).is_file() and not (folder / name).is_file():
                temporary = folder / f".{name}.tmp"
                shutil.copyfile(snapshot / name, temporary)  # the cache's links followed: real files
                temporary.replace(folder / name)
    except OSError as error:
        raise SeqVAEError(f"{folder}: cannot copy the model there ({error.strerror or error}); set SEQVAE_HOME to a writable folder") from None
    return folder


def local_run(location: str | Path) -> Path:
    """A run location as a local folder: a hub address fetched, a path as it is."""
    return fetch(location) if is_hub_address(location) else Path(location)

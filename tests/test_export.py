"""seqvae export: a run's model as a folder of safetensors weights, config, tokenizer, prior and
model card, that load_run and every command read without unpickling anything."""

from __future__ import annotations

import pytest
import torch

from seqvae import load_run
from seqvae.cli import main
from seqvae.config import config_to_toml

from conftest import tiny_config


@pytest.fixture(scope="module")
def run(tiny_corpus, tmp_path_factory):
    folder = tmp_path_factory.mktemp("export")
    config = folder / "config.toml"
    config.write_text(config_to_toml(tiny_config(tiny_corpus, folder / "run", train={"epochs": 2, "validation": "elbo"},
                                                 prior={"fit": True, "components": [1, 2]})))
    assert main(["train", str(config), "--no-progress"]) == 0
    assert main(["eval", str(folder / "run"), "--split", "valid", "--iw-samples", "5", "--prior-samples", "0"]) == 0
    return folder / "run"


def test_an_exported_folder_loads_without_unpickling_and_decodes_as_the_run(run, tmp_path, capsys, monkeypatch):
    out = tmp_path / "shared model"
    assert main(["export", str(run), str(out)]) == 0
    assert {path.name for path in out.iterdir()} == {"model.safetensors", "config.toml", "tokenizer.json", "prior.json",
                                                      "data.json", "README.md"}
    card = (out / "README.md").read_text()
    assert "## Measured" in card and "valid split, best checkpoint" in card and "--iw-samples 5" in card and "load_run(" in card
    original = load_run(run, device="cpu")

    def refused(*args, **kwargs):
        raise AssertionError("an exported folder was read with torch.load")

    monkeypatch.setattr(torch, "load", refused)
    exported = load_run(out, device="cpu")
    for name, tensor in original.model.state_dict().items():
        assert torch.equal(tensor, exported.model.state_dict()[name]), name
    assert exported.sample(4, seed=3) == original.sample(4, seed=3)
    assert exported.checkpoint.step == original.checkpoint.step and not exported.checkpoint.fallback
    monkeypatch.undo()
    capsys.readouterr()
    assert main(["sample", str(out), "-n", "2", "--prior", "fitted"]) == 0
    assert len(capsys.readouterr().out.strip().splitlines()) == 2


def test_eval_no_save_prints_the_figures_and_leaves_a_shared_folder_as_it_was(run, tmp_path, capsys):
    out = tmp_path / "shared"
    assert main(["export", str(run), str(out)]) == 0
    def files():
        return {path.relative_to(out): (path.stat().st_size, path.stat().st_mtime_ns) for path in out.rglob("*")}

    before = files()
    capsys.readouterr()
    assert main(["eval", str(out), "--split", "valid", "--iw-samples", "3", "--prior-samples", "0", "--no-save"]) == 0
    printed = capsys.readouterr().out
    assert "nll_iw" in printed and "saved to" not in printed
    assert files() == before
    assert main(["eval", str(out), "--split", "valid", "--iw-samples", "3", "--prior-samples", "0"]) == 0  # without it, kept
    assert "saved to" in capsys.readouterr().out and (out / "eval" / "valid-best.json").is_file()


def test_half_precision_weights_change_the_bound_by_less_than_a_hundredth_of_a_nat(run, tmp_path, capsys):
    figures = {}
    for dtype in ("float32", "float16"):
        assert main(["export", str(run), str(tmp_path / dtype), "--dtype", dtype]) == 0
        figures[dtype] = load_run(tmp_path / dtype, device="cpu").evaluate("valid", iw_samples=5, prior_samples=0, seed=0)
    assert (tmp_path / "float16" / "model.safetensors").stat().st_size < 0.6 * (tmp_path / "float32" / "model.safetensors").stat().st_size
    assert abs(figures["float16"]["nll_iw"] - figures["float32"]["nll_iw"]) < 0.01
    capsys.readouterr()
    assert main(["export", str(run), str(tmp_path / "float16")]) == 2  # an existing folder is not replaced unasked
    assert "exists; pass --overwrite" in capsys.readouterr().err
    assert main(["export", str(tmp_path / "float16"), str(tmp_path / "again")]) == 2
    assert "already an exported model folder" in capsys.readouterr().err


class FakeHub:
    """The hub, offline: HfApi's repository and upload calls write the hub client's own cache
    layout (models--OWNER--NAME/snapshots/COMMIT, refs/REVISION), which the real
    snapshot_download then resolves with HF_HUB_OFFLINE set, as it would a downloaded model."""

    def __init__(self, cache, monkeypatch):
        import huggingface_hub
        from huggingface_hub import constants

        self.cache, self.calls = cache, []
        monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
        monkeypatch.setattr(constants, "HF_HUB_CACHE", str(cache))
        for name in ("create_repo", "create_branch", "upload_folder"):
            monkeypatch.setattr(huggingface_hub.HfApi, name, getattr(self, name))

    def create_repo(self, repo_id, **options):
        self.calls.append(("create_repo", repo_id, options))

    def create_branch(self, repo_id, **options):
        self.calls.append(("create_branch", repo_id, options))

    def upload_folder(self, *, folder_path, repo_id, allow_patterns, revision=None, **options):
        import fnmatch
        import hashlib
        import shutil
        from pathlib import Path
        from types import SimpleNamespace

        self.calls.append(("upload_folder", repo_id, {"allow_patterns": allow_patterns, **options}))
        files = sorted(path for path in Path(folder_path).rglob("*")
                       if path.is_file() and any(fnmatch.fnmatch(path.name, pattern) for pattern in allow_patterns))
        commit = hashlib.sha1(b"".join(path.read_bytes() for path in files)).hexdigest()
        repo = self.cache / f"models--{repo_id.replace('/', '--')}"
        (repo / "snapshots" / commit).mkdir(parents=True, exist_ok=True)
        for path in files:
            shutil.copyfile(path, repo / "snapshots" / commit / path.name)
        (repo / "refs").mkdir(exist_ok=True)
        (repo / "refs" / (revision or "main")).write_text(commit)
        return SimpleNamespace(commit_url=f"https://huggingface.co/{repo_id}/commit/{commit}")


def test_push_and_load_from_the_hub_through_the_real_client_offline(run, tmp_path, capsys, monkeypatch):
    hub = FakeHub(tmp_path / "hf-cache", monkeypatch)
    monkeypatch.setenv("SEQVAE_HOME", str(tmp_path / "home"))
    out = tmp_path / "model"
    assert main(["export", str(run), str(out)]) == 0
    (out / "eval-valid-best.json").write_text("{}")  # what using the folder adds is not pushed
    capsys.readouterr()
    assert main(["push", str(out), "me/tiny-vae", "--private"]) == 0
    printed = capsys.readouterr().out
    assert "https://huggingface.co/me/tiny-vae/commit/" in printed and "seqvae sample hf://me/tiny-vae" in printed
    assert hub.calls[0] == ("create_repo", "me/tiny-vae", {"repo_type": "model", "private": True, "exist_ok": True})
    pushed = set(hub.calls[-1][2]["allow_patterns"])
    assert pushed == {"model.safetensors", "config.toml", "tokenizer.json", "prior.json", "data.json", "README.md"}

    local, fetched = load_run(out, device="cpu"), load_run("hf://me/tiny-vae", device="cpu")
    assert fetched.sample(4, seed=2) == local.sample(4, seed=2)
    assert fetched.run_dir.parent == tmp_path / "home" / "hub" / "me--tiny-vae"
    assert main(["sample", str(out), "-n", "3", "--seed", "2"]) == 0
    from_folder = capsys.readouterr().out
    assert main(["sample", "hf://me/tiny-vae", "-n", "3", "--seed", "2"]) == 0
    assert capsys.readouterr().out == from_folder
    # a command that writes into the run writes into the working folder, never the client's cache
    snapshot = next((tmp_path / "hf-cache").rglob("snapshots/*"))
    before = sorted(path.name for path in snapshot.iterdir())
    assert main(["eval", "hf://me/tiny-vae", "--split", "valid", "--iw-samples", "3", "--prior-samples", "0"]) == 0
    assert sorted(path.name for path in snapshot.iterdir()) == before
    assert any(path.name.startswith("eval") for path in fetched.run_dir.iterdir())

    assert main(["push", str(out), "me/tiny-vae", "--revision", "dev"]) == 0
    assert hub.calls[-2] == ("create_branch", "me/tiny-vae", {"branch": "dev", "repo_type": "model", "exist_ok": True})
    assert load_run("hf://me/tiny-vae@dev", device="cpu").sample(2, seed=2) == local.sample(2, seed=2)


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["sample", "hf://me/not-pushed"], "hf://me/not-pushed: the hub cannot be reached and this revision is not in the local cache"),
        (["sample", "hf://just-a-name"], "hf://just-a-name: not a hub address; write hf://OWNER/NAME"),
        (["push", "RUN", "me/x"], "a run directory; export it first: seqvae export"),
        (["push", "EMPTY", "me/x"], "holds no model.safetensors; push takes a folder written by seqvae export"),
        (["push", "EMPTY", "not an id"], "not an id: not a hub repository id; write OWNER/NAME"),
        (["push", "MISSING", "me/x"], "no such folder; push takes a folder written by seqvae export"),
        (["push", "MODEL", "me/unreachable"], "push to me/unreachable: ConnectionError: the hub is down"),
    ],
)
def test_hub_mistakes_are_one_line_errors(run, tmp_path, capsys, monkeypatch, argv, message):
    import huggingface_hub

    FakeHub(tmp_path / "hf-cache", monkeypatch)
    monkeypatch.setenv("SEQVAE_HOME", str(tmp_path / "home"))
    (tmp_path / "empty").mkdir()
    (tmp_path / "model").mkdir()
    (tmp_path / "model" / "model.safetensors").write_bytes(b"")  # enough to be taken for an export

    def unreachable(self, repo_id, **options):  # what the client's HTTP library raises without a network
        raise ConnectionError("the hub is down")

    monkeypatch.setattr(huggingface_hub.HfApi, "create_repo", unreachable)
    places = {"RUN": str(run), "EMPTY": str(tmp_path / "empty"), "MISSING": str(tmp_path / "missing"), "MODEL": str(tmp_path / "model")}
    argv = [places.get(item, item) for item in argv]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and message in err and "Traceback" not in err

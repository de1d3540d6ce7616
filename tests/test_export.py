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

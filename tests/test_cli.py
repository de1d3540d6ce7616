"""Every command and recipe end to end on tiny settings."""

import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from seqvae.cli import main
from seqvae.config import config_to_toml

from conftest import THREADS, tiny_config

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def trained_run(tiny_corpus, tmp_path_factory):
    """One tiny run trained through the CLI, shared by the commands that read a run."""
    folder = tmp_path_factory.mktemp("cli")
    config_path = folder / "config.toml"
    config_path.write_text(config_to_toml(tiny_config(tiny_corpus, folder / "run")), encoding="utf-8")
    assert main(["train", str(config_path), "train.epochs=1", "--no-progress"]) == 0
    return folder / "run"


def test_train_prints_validation_metrics(tiny_corpus, tmp_path, capsys):
    config_path = tmp_path / "c.toml"
    config_path.write_text(config_to_toml(tiny_config(tiny_corpus, tmp_path / "run")), encoding="utf-8")
    assert main(["train", str(config_path), "train.epochs=1", "model.latent_dim=3", "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert "validation after epoch 1" in out and "ppl_elbo" in out
    assert "latent_dim = 3" in (tmp_path / "run" / "config.toml").read_text()


def test_train_resume_continues_a_stopped_run(tiny_corpus, tmp_path, capsys):
    config_path = tmp_path / "c.toml"
    config_path.write_text(config_to_toml(tiny_config(tiny_corpus, tmp_path / "run")), encoding="utf-8")
    assert main(["train", str(config_path), "train.max_steps=5", "--no-progress"]) == 0
    assert main(["train", str(config_path), "--resume", "--no-progress"]) == 0
    assert "validation after epoch 2" in capsys.readouterr().out


def test_eval_prints_metrics_and_json(trained_run, capsys):
    assert main(["eval", str(trained_run), "--split", "test"]) == 0
    assert "elbo" in capsys.readouterr().out
    assert main(["eval", str(trained_run), "--split", "valid", "--json", "--checkpoint", "last", "--prior-samples", "5"]) == 0
    captured = capsys.readouterr()
    metrics = json.loads(captured.out)
    assert metrics["split"] == "valid" and metrics["sentences"] == 60
    # which checkpoint was evaluated: named on stderr and in the JSON
    assert f"loaded {trained_run / 'checkpoints' / 'last.pt'} (step 19, 1 epochs finished)" in captured.err
    assert metrics["checkpoint_file"].endswith("last.pt") and metrics["checkpoint_step"] == 19 and metrics["checkpoint_epochs"] == 1
    assert 0.0 <= metrics["prior_distinct_1"] <= 1.0 and isinstance(metrics["warnings"], list)
    assert main(["eval", str(trained_run), "--prior-samples", "1"]) == 2
    assert "--prior-samples 1" in capsys.readouterr().err
    assert metrics["elbo"] == pytest.approx(metrics["rec"] + metrics["kl"])


def test_eval_saves_its_result_and_report_writes_the_plot_and_summary(trained_run, tmp_path, capsys):
    assert main(["eval", str(trained_run), "--split", "valid", "--iw-samples", "5", "--prior-samples", "4"]) == 0
    saved = json.loads((trained_run / "eval" / "valid-best.json").read_text())
    assert saved["settings"]["iw_samples"] == 5 and saved["metrics"]["iw_samples"] == 5
    assert main(["report", str(trained_run), "--output", str(tmp_path / "r"), "--samples", "2", "--steps", "3"]) == 0
    assert "report.md" in capsys.readouterr().out
    assert (tmp_path / "r" / "training.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    summary = (tmp_path / "r" / "report.md").read_text()
    for section in ("## Data", "## Training", "## Final metrics", "## Samples from the prior", "## Latent space",
                    "## Reconstructions", "## Interpolation"):
        assert section in summary
    assert (tmp_path / "r" / "latent.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and "](latent.png)" in summary
    assert "and by each attribute" in summary  # the tiny corpus is the embedded one, with its labels
    assert f"| nll_iw | {saved['metrics']['nll_iw']:.4g} |" in summary  # the saved evaluation, not a new one
    assert summary.count("| 0.50 |") == 1  # three interpolation steps: 0, 0.5, 1
    samples = [line for line in summary.splitlines() if line[:3] in ("1. ", "2. ", "3. ")]
    assert len(samples) == 2


def test_report_of_a_folder_that_is_not_a_run_is_a_one_line_error(tmp_path, capsys):
    assert main(["report", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "metrics.jsonl: no training log" in err


def test_sample_prints_n_sentences(trained_run, capsys):
    assert main(["sample", str(trained_run), "-n", "3", "--seed", "1"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 3 and all(float(line.split()[0]) <= 0 for line in lines)  # log p per token first
    assert main(["sample", str(trained_run), "-n", "3", "--seed", "1"]) == 0
    assert capsys.readouterr().out.strip().splitlines() == lines


@pytest.mark.parametrize("strategy", [["--strategy", "sample", "--top-p", "0.9"], ["--strategy", "sample", "--top-k", "5", "--temperature", "0.7"], ["--strategy", "beam", "--beam-size", "3", "--length-penalty", "1"]])
def test_sample_strategies_write_jsonl_and_reproduce_with_a_seed(trained_run, tmp_path, capsys, strategy):
    output = tmp_path / "samples.jsonl"
    assert main(["sample", str(trained_run), "-n", "4", "--seed", "3", "--output", str(output), *strategy]) == 0
    records = [json.loads(line) for line in output.read_text().splitlines()]
    assert len(records) == 4 and all(set(r) == {"text", "tokens", "log_prob_per_token"} for r in records)
    assert all(r["log_prob_per_token"] <= 0 and r["tokens"] >= 1 for r in records)
    printed = capsys.readouterr().out.strip().splitlines()
    assert [line.split(None, 1)[1] if len(line.split(None, 1)) > 1 else "" for line in printed] == [r["text"] for r in records]
    before = output.read_bytes()
    assert main(["sample", str(trained_run), "-n", "4", "--seed", "3", "--output", str(output), *strategy]) == 2
    assert "exists; pass --overwrite" in capsys.readouterr().err and output.read_bytes() == before
    assert main(["sample", str(trained_run), "-n", "4", "--seed", "3", "--output", str(output), "--overwrite", *strategy]) == 0
    assert output.read_bytes() == before  # seeded: the same samples


def test_bad_decoding_options_are_one_line_errors(trained_run, capsys):
    for options, expected in [(["--top-p", "0"], "--top-p 0.0"), (["--temperature", "-1"], "--temperature -1.0"), (["--beam-size", "0"], "--beam-size 0")]:
        assert main(["sample", str(trained_run), *options]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and expected in err


def test_reconstruct_from_arguments_and_from_a_file(trained_run, tmp_path, capsys):
    sentences = ["the coach will win the game .", "those violinists record a melody ."]
    assert main(["reconstruct", str(trained_run), *sentences]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0] == sentences[0] and out[1].startswith("  -> ") and out[2] == sentences[1]
    (tmp_path / "in.txt").write_text("\n".join(sentences) + "\n\n")
    assert main(["reconstruct", str(trained_run), "--input", str(tmp_path / "in.txt")]) == 0
    assert capsys.readouterr().out.splitlines() == out
    assert main(["reconstruct", str(trained_run), "--input", str(tmp_path / "in.txt"), "--sample-posterior", "--seed", "2"]) == 0
    assert len(capsys.readouterr().out.splitlines()) == 4
    assert main(["reconstruct", str(trained_run)]) == 2
    assert "sentences as arguments or --input" in capsys.readouterr().err


def test_encode_writes_means_and_stds_that_numpy_and_torch_load(trained_run, tmp_path, capsys):
    import numpy
    import torch

    from seqvae.runs import load_run

    sentences = ["the coach will win the game .", "those violinists record a melody .", "a tourist books a trip ."]
    (tmp_path / "in.txt").write_text("\n".join(sentences) + "\n")
    expected = load_run(trained_run, device="cpu").encode(sentences)
    assert main(["encode", str(trained_run), "--input", str(tmp_path / "in.txt"), "--output", str(tmp_path / "z.npz")]) == 0
    arrays = numpy.load(tmp_path / "z.npz")
    assert arrays["mean"].shape == (3, 4) and numpy.allclose(arrays["mean"], expected.mean.numpy(), atol=1e-6)
    assert numpy.allclose(arrays["std"], expected.std.numpy(), atol=1e-6)
    assert torch.allclose(torch.from_numpy(arrays["mean"]), expected.mean, atol=1e-6)
    assert main(["encode", str(trained_run), "--input", str(tmp_path / "in.txt"), "--output", str(tmp_path / "z.pt")]) == 0
    loaded = torch.load(tmp_path / "z.pt", weights_only=True)
    assert torch.allclose(loaded["std"], expected.std, atol=1e-6)
    assert main(["encode", str(trained_run), "--input", str(tmp_path / "in.txt"), "--output", str(tmp_path / "z.npz")]) == 2
    assert "exists" in capsys.readouterr().err
    assert main(["encode", str(trained_run), "--input", str(tmp_path / "in.txt"), "--output", str(tmp_path / "z.csv")]) == 2
    assert ".npz or .pt" in capsys.readouterr().err


def test_interpolate_prints_the_homotopy(trained_run, capsys):
    args = ["interpolate", str(trained_run), "the coach will win the game .", "those violinists record a melody .", "--steps", "5"]
    assert main(args) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert [line.split()[0] for line in lines] == ["0.00", "0.25", "0.50", "0.75", "1.00"]
    assert main([*args, "--path", "slerp"]) == 0
    slerp = capsys.readouterr().out.strip().splitlines()
    assert slerp[0] == lines[0] and slerp[-1] == lines[-1]  # the same endpoints
    assert main(["interpolate", str(trained_run), "--prior", "--steps", "3", "--seed", "4", "--path", "slerp"]) == 0
    assert len(capsys.readouterr().out.strip().splitlines()) == 3
    assert main(["interpolate", str(trained_run), "--steps", "3"]) == 2
    assert "two sentences A B, or --prior" in capsys.readouterr().err


def test_attribute_with_files_and_on_the_embedded_corpus(trained_run, tiny_corpus, tmp_path, capsys):
    from seqvae.data.synthetic import read_labels

    sentences = tiny_corpus["train"].read_text().splitlines()
    labels = read_labels(tiny_corpus["train"].with_name("train.labels.jsonl"))
    (tmp_path / "with.txt").write_text("\n".join(s for s, l in zip(sentences, labels) if l["tense"] == "future"))
    (tmp_path / "without.txt").write_text("\n".join(s for s, l in zip(sentences, labels) if l["tense"] != "future"))
    (tmp_path / "apply.txt").write_text("the coach won the game .\nthose violinists record a melody .\n")
    files = ["--with", str(tmp_path / "with.txt"), "--without", str(tmp_path / "without.txt"), "--apply", str(tmp_path / "apply.txt")]
    output = tmp_path / "moved.jsonl"
    assert main(["attribute", str(trained_run), *files, "--scale", "1", "2", "--output", str(output)]) == 0
    out = capsys.readouterr().out.splitlines()
    # per sentence: the input, its baseline decode (scale 0), one decode per scale; then the vector
    assert len(out) == 2 * 4 + 2 and out[0] == "the coach won the game ."
    assert [line.split()[0] for line in out[1:4]] == ["0", "+1", "+2"]
    assert out[-2].startswith("vector norm ") and "of the codes' spread" in out[-2] and "applied to 2" in out[-2]
    assert re.fullmatch(r"BLEU to the input: unchanged codes [\d.]+; scale 1 [\d.]+; scale 2 [\d.]+", out[-1])
    records = [json.loads(line) for line in output.read_text().splitlines()]
    assert [r["input"] for r in records] == ["the coach won the game .", "those violinists record a melody ."]
    assert set(records[0]["outputs"]) == {"1", "2"} and records[0]["baseline"] == out[1].split(maxsplit=1)[1]
    # the codes of --with and --without were kept with the run, keyed by content: a second call reuses them
    cached = sorted((trained_run / "cache").glob("means-*.pt"))
    assert len(cached) == 2
    stamps = [path.stat().st_mtime_ns for path in cached]
    assert main(["attribute", str(trained_run), *files, "--scale", "2", "--output", str(output)]) == 2
    assert "exists; pass --overwrite" in capsys.readouterr().err
    assert main(["attribute", str(trained_run), *files, "--scale", "2"]) == 0
    again = capsys.readouterr().out.splitlines()
    assert again[2] == out[3] and [path.stat().st_mtime_ns for path in cached] == stamps
    assert main(["attribute", str(trained_run), "--attribute", "tense=future", "--limit", "10", "--show", "2", "--scale", "1", "3"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert len(out) == 2 * 4 + 6 and "applied to 10" in out[8] and out[9].startswith("BLEU to the input: unchanged codes ")
    assert re.fullmatch(r"tense=future, unchanged codes: reached [\d.]+, other attributes kept [\d.]+, transfer rate [\d.]+", out[10])
    # the tiny corpus is the embedded one as written (seed 1): the perfect edits' BLEU is the ceiling
    perfect = re.fullmatch(r"  perfect edits \(the corpus's own sentences with tense=future\): BLEU to the input ([\d.]+)", out[11])
    assert perfect and 20 < float(perfect[1]) < 80
    assert re.match(r"  scale 1: reached [\d.]+, other attributes kept [\d.]+, BLEU to the input [\d.]+, transfer rate [\d.]+; "
                    r"attributes changed from the unchanged decode: topic ", out[12]) and out[13].startswith("  scale 3:")
    assert main(["attribute", str(trained_run), "--attribute", "tense=tomorrow"]) == 2
    assert "tense=past|present|future" in capsys.readouterr().err
    assert main(["attribute", str(trained_run), "--with", str(tmp_path / "with.txt")]) == 2
    assert "pass all of --with, --without and --apply" in capsys.readouterr().err


def test_corpus_writes_files_and_refuses_to_overwrite(tmp_path, capsys):
    assert main(["corpus", str(tmp_path / "c"), "--train", "20", "--valid", "5", "--test", "5"]) == 0
    assert len((tmp_path / "c" / "train.txt").read_text().splitlines()) == 20
    assert len((tmp_path / "c" / "train.labels.jsonl").read_text().splitlines()) == 20
    before = (tmp_path / "c" / "train.txt").read_bytes()
    assert main(["corpus", str(tmp_path / "c"), "--train", "30"]) == 2
    assert "exists" in capsys.readouterr().err
    assert (tmp_path / "c" / "train.txt").read_bytes() == before


def _run(args, cwd, timeout=600):
    env = {**os.environ, "OMP_NUM_THREADS": str(THREADS)}
    return subprocess.run([sys.executable, *args], cwd=cwd, capture_output=True, text=True, timeout=timeout, env=env)


def _recipe(path: Path, argv: list[str], cwd: Path, monkeypatch, capsys):
    """A recipe's main(argv) run in this test process from ``cwd`` (the README walk runs the
    quickstart recipe as its own process): (exit code, stdout, stderr)."""
    spec = importlib.util.spec_from_file_location(f"recipe_{path.parent.name}", path)
    recipe = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(recipe)
    monkeypatch.chdir(cwd)
    capsys.readouterr()
    code = recipe.main(argv)
    out, err = capsys.readouterr()
    return subprocess.CompletedProcess(argv, code, out, err)


def test_quickstart_recipe_end_to_end(tmp_path, monkeypatch, capsys):
    result = _recipe(
        REPO / "recipes/quickstart/run.py",
        ["--corpus-size", "200", "train.epochs=1", "model.hidden_dim=16", "model.embedding_dim=8"],
        tmp_path, monkeypatch, capsys,
    )
    assert result.returncode == 0, result.stderr
    assert "validation, best checkpoint:" in result.stdout
    assert "greedy decoding of their posterior means" in result.stdout
    assert "five sentences decoded from z ~ N(0, I):" in result.stdout
    assert "interpolation between the posterior means" in result.stdout
    assert (tmp_path / "runs/quickstart/checkpoints/best.pt").is_file()
    assert "## Final metrics" in (tmp_path / "runs/quickstart/report/report.md").read_text()
    assert (tmp_path / "runs/quickstart/report/training.png").stat().st_size > 0
    assert len((tmp_path / "runs/synthetic-corpus/train.txt").read_text().splitlines()) == 200
    assert len((tmp_path / "runs/synthetic-corpus/test.txt").read_text().splitlines()) == 100  # a tenth, at least 100


def test_quickstart_ctrl_c_after_training_ends_quietly(tmp_path, monkeypatch, capsys):
    spec = importlib.util.spec_from_file_location("quickstart_run", REPO / "recipes" / "quickstart" / "run.py")
    recipe = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(recipe)
    monkeypatch.chdir(tmp_path)

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(recipe, "load_run", interrupted)  # Ctrl-C in the evaluation that follows training
    assert recipe.main(["--corpus-size", "200", "train.epochs=1", "model.hidden_dim=16", "model.embedding_dim=8"]) == 130
    err = capsys.readouterr().err
    assert "quickstart: interrupted; rerun this command with --resume to continue from the last checkpoint" in err
    assert (tmp_path / "runs/quickstart/checkpoints/best.pt").is_file()


@pytest.mark.parametrize(
    "pairing",
    [[], ["model.encoder=transformer", "model.decoder=transformer", "model.injection=memory", "model.num_heads=2"]],
    ids=["lstm", "transformer"],
)
def test_ptb_recipe_end_to_end_on_a_tiny_stand_in(tiny_corpus, tmp_path, pairing, monkeypatch, capsys):
    data = tmp_path / "ptb"
    data.mkdir()
    for split in ("train", "valid", "test"):
        lines = tiny_corpus[split].read_text().splitlines()[:40]
        # PTB style: a leading and trailing space and <unk> for rare words
        (data / f"ptb.{split}.txt").write_text("".join(f" {line.replace('coach', '<unk>')} \n" for line in lines))
    result = _recipe(
        REPO / "recipes/ptb/run.py",
        ["--data-dir", str(data), "--iw-samples", "20", "train.epochs=1", "model.hidden_dim=16", "model.embedding_dim=8",
         "model.latent_dim=4", "model.adaptive_cutoffs=40,100", *pairing, "--results", "row.json"],
        tmp_path, monkeypatch, capsys,
    )
    assert result.returncode == 0, result.stderr
    assert "test (best checkpoint):" in result.stdout and "ppl_elbo" in result.stdout and "ppl_iw" in result.stdout
    # the row of RESULTS.md: the test figures with the command, output layer, epochs and times
    row = json.loads((tmp_path / "row.json").read_text())
    assert row["split"] == "test" and row["iw_samples"] == 20 and row["output_layer"] == "adaptive" and row["epochs_trained"] == 1
    assert row["command"].startswith("python recipes/ptb/run.py --data-dir") and row["command"].endswith("--results row.json")
    assert row["train_seconds"] > 0 and row["checkpoint_epochs"] == 1 and {"ppl_iw", "nll_iw", "kl", "mi", "active_units", "tokens"} <= set(row)
    # every stage's training time, and the validation figures a setting is chosen on, kept with the row and the run
    assert [stage["run_dir"] for stage in row["stages"]] == ["runs/ptb"] and row["stages"][0]["train_seconds"] == row["train_seconds"]
    assert row["valid"]["iw_samples"] == 20 and row["valid"]["nll_iw"] != row["nll_iw"] and "active_units" in row["valid"]
    kept = {path.name: json.loads(path.read_text()) for path in (tmp_path / "runs/ptb/eval").glob("*.json")}
    assert set(kept) == {"valid-best.json", "test-best.json"} and kept["valid-best.json"]["metrics"]["nll_iw"] == row["valid"]["nll_iw"]
    config = (tmp_path / "runs/ptb/config.toml").read_text()
    assert 'free_bits = "per_dimension"' in config and "latent_dim = 4" in config
    assert 'output_layer = "adaptive"' in config and "adaptive_cutoffs = [40, 100]" in config


def test_ptb_recipe_names_a_missing_file(tmp_path):
    (tmp_path / "ptb").mkdir()
    result = _run([str(REPO / "recipes/ptb/run.py"), "--data-dir", str(tmp_path / "ptb")], cwd=tmp_path)
    assert result.returncode == 2
    assert "ptb.train.txt: missing" in result.stderr and "Traceback" not in result.stderr


def test_console_command_is_installed():
    beside_python = Path(sys.executable).with_name("seqvae")
    command = str(beside_python) if beside_python.exists() else shutil.which("seqvae")
    assert command, "the seqvae console command is not installed"
    result = subprocess.run([command, "--help"], capture_output=True, text=True)
    assert result.returncode == 0
    for command in ("train", "eval", "sample", "interpolate", "corpus"):
        assert command in result.stdout


@pytest.mark.parametrize("pairing", ["config", "lstm-transformer", "transformer-lstm", "transformer-transformer"])
def test_every_quickstart_pairing_trains_evaluates_samples_and_interpolates(pairing, tiny_corpus, tmp_path, capsys):
    config = REPO / "recipes" / "quickstart" / f"{pairing}.toml"
    tiny = [
        f"data.train={tiny_corpus['train']}",
        f"data.valid={tiny_corpus['valid']}",
        f"data.test={tiny_corpus['test']}",
        f"run.dir={tmp_path / 'run'}",
        "model.embedding_dim=16",
        "model.hidden_dim=24",
        "model.ff_dim=32",
        "model.num_heads=2",
        "train.epochs=1",
    ]
    assert main(["train", str(config), *tiny, "--no-progress"]) == 0
    assert main(["eval", str(tmp_path / "run"), "--json"]) == 0
    assert main(["sample", str(tmp_path / "run"), "-n", "2"]) == 0
    assert main(["sample", str(tmp_path / "run"), "-n", "2", "--strategy", "beam", "--beam-size", "3"]) == 0
    assert main(["sample", str(tmp_path / "run"), "-n", "2", "--strategy", "sample", "--top-p", "0.9"]) == 0
    assert main(["reconstruct", str(tmp_path / "run"), "the coach won .", "--strategy", "beam"]) == 0
    assert main(["encode", str(tmp_path / "run"), "--input", str(tiny_corpus["valid"]), "--output", str(tmp_path / "z.npz")]) == 0
    assert main(["attribute", str(tmp_path / "run"), "--attribute", "number=plural", "--limit", "5", "--show", "0"]) == 0
    assert main(["interpolate", str(tmp_path / "run"), "the coach won .", "a tourist books a trip .", "--steps", "3", "--path", "slerp"]) == 0
    out = capsys.readouterr().out
    assert '"split": "test"' in out and "transfer rate" in out
    assert [line.split()[0] for line in out.strip().splitlines()[-3:]] == ["0.00", "0.50", "1.00"]


def test_overrides_may_follow_flags(tiny_corpus, tmp_path):
    config_path = tmp_path / "c.toml"
    config_path.write_text(config_to_toml(tiny_config(tiny_corpus, tmp_path / "run")), encoding="utf-8")
    assert main(["train", str(config_path), "--no-progress", "model.latent_dim=3", "train.epochs=1", "--device", "cpu", "train.max_steps=2"]) == 0
    saved = (tmp_path / "run" / "config.toml").read_text()
    assert "latent_dim = 3" in saved and "max_steps = 2" in saved
    with pytest.raises(SystemExit):
        main(["sample", str(tmp_path / "run"), "model.latent_dim=3"])  # only train takes overrides


def test_a_closed_output_pipe_ends_quietly(trained_run):
    result = subprocess.run(
        ["bash", "-c", f"set -o pipefail; {sys.executable} -m seqvae sample {trained_run} -n 2000 --strategy sample | head -n 1"],
        capture_output=True, text=True, timeout=300,
    )
    assert result.returncode == 0, result.stderr
    assert len(result.stdout.splitlines()) == 1 and "Traceback" not in result.stderr and "BrokenPipe" not in result.stderr


def test_no_unk_keeps_unk_out_of_every_strategy(trained_run):
    import torch

    from seqvae.data.tokenizers import UNK_ID
    from seqvae.generation import Decoding, decode
    from seqvae.runs import load_run

    run = load_run(trained_run, device="cpu")
    with torch.no_grad():  # a decoder that prefers <unk> above all
        run.model.decoder.output.bias[UNK_ID] += 50.0
    z = run.prior(6, seed=0)
    for strategy in ("greedy", "sample", "beam"):
        allowed = decode(run.model.decoder, z, Decoding(strategy, max_length=8), generator=torch.Generator().manual_seed(0))
        assert any(UNK_ID in row for row in allowed)
        barred = decode(run.model.decoder, z, Decoding(strategy, max_length=8, forbid_unk=True), generator=torch.Generator().manual_seed(0))
        assert not any(UNK_ID in row for row in barred)


def test_a_checkpoint_carrying_code_is_refused_as_such_without_warnings(trained_run, tmp_path):
    import torch

    copy = tmp_path / "run"
    shutil.copytree(trained_run, copy)

    class Payload:
        def __reduce__(self):
            return (print, ("this must never run",))

    torch.save({"format": "seqvae-checkpoint-1", "payload": Payload()}, copy / "checkpoints" / "best.pt")
    result = subprocess.run([sys.executable, "-m", "seqvae", "sample", str(copy), "-n", "1"], capture_output=True, text=True, timeout=120)
    assert result.returncode == 2 and "this must never run" not in result.stdout
    assert result.stderr.strip().splitlines() == [
        f"seqvae: error: {copy / 'checkpoints' / 'best.pt'}: refused: it holds Python objects or code, which a seqvae "
        "checkpoint never does (only tensors and plain values are loaded)"
    ]


def test_a_note_when_most_words_of_an_input_are_unknown(trained_run, capsys):
    assert main(["interpolate", str(trained_run), "the first sentence .", "the coach will win the game .", "--steps", "2"]) == 0
    err = capsys.readouterr().err
    assert "half or more of the words of 'the first sentence .' are unknown to this model" in err
    assert "the coach will win" not in err


def test_a_note_when_an_input_is_longer_than_the_model_reads(tiny_corpus, tmp_path, capsys):
    # a Transformer of 8 positions reads 6 tokens; the splits follow the length policy, and so
    # do command inputs, which are truncated there with a note instead of silently
    config_path = tmp_path / "c.toml"
    config_path.write_text(config_to_toml(tiny_config(tiny_corpus, tmp_path / "run")), encoding="utf-8")
    assert main(["train", str(config_path), "train.max_steps=2", "--no-progress", "model.encoder=transformer",
                 "model.decoder=transformer", "model.injection=memory", "model.num_heads=2", "model.max_positions=8"]) == 0
    capsys.readouterr()
    long, short = "the coach will win the game on the big day .", "the coach will win ."
    assert main(["reconstruct", str(tmp_path / "run"), long, short]) == 0
    assert "note: 1 input sentence is longer than this model reads (6 tokens): truncated there" in capsys.readouterr().err
    assert main(["reconstruct", str(tmp_path / "run"), short]) == 0
    assert "longer than this model reads" not in capsys.readouterr().err


def test_a_run_without_best_checkpoint_is_loaded_from_last_and_says_so(tiny_corpus, tmp_path, capsys):
    config_path = tmp_path / "c.toml"
    config_path.write_text(config_to_toml(tiny_config(tiny_corpus, tmp_path / "run")), encoding="utf-8")
    assert main(["train", str(config_path), "train.max_steps=5", "train.checkpoint_every=5", "--no-progress"]) == 0
    (tmp_path / "run" / "checkpoints" / "best.pt").unlink()  # as if stopped before any validation
    capsys.readouterr()
    assert main(["sample", str(tmp_path / "run"), "-n", "1"]) == 0
    err = capsys.readouterr().err
    assert "last.pt (step 5, 0 epochs finished): the run has no best.pt yet" in err


def test_the_version_is_written_once_and_printed(capsys):
    import importlib.metadata
    import tomllib

    import seqvae

    with pytest.raises(SystemExit) as stopped:
        main(["--version"])
    assert stopped.value.code == 0 and capsys.readouterr().out.strip() == f"seqvae {seqvae.__version__}"
    assert importlib.metadata.version("seqvae") == seqvae.__version__  # the installed metadata reads it
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    assert "version" not in project and "version" in project["dynamic"]

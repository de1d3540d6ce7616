"""The collapse remedies as named methods: each tested for its mechanism, for exact resume, and
end to end through recipes/ptb/run.py --method on a tiny stand-in for PTB."""

import importlib.util
import json
import math
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
import torch

from seqvae.aggressive import AggressiveSwitch, InnerLoopRule
from seqvae.config import ModelConfig
from seqvae.data.batching import collate
from seqvae.errors import SeqVAEError
from seqvae.evaluation import ABSENT_FOR_LANGUAGE_MODELS
from seqvae.models.posterior import GaussianPosterior
from seqvae.models.vae import build_model
from seqvae.rate_constraint import MinimumDesiredRate
from seqvae.runs import load_run
from seqvae.training import train

from conftest import metrics as _metrics, tiny_config, without_stops as _without_stops

REPO = Path(__file__).resolve().parents[1]




def _weights(run_dir, name="last"):
    return torch.load(run_dir / "checkpoints" / f"{name}.pt", weights_only=True)["model"]


# ---- the language-model baseline (model.latent_dim = 0) ----


def test_language_model_nll_equals_a_plain_lstm_language_model_with_the_same_weights():
    torch.manual_seed(0)
    model = build_model(ModelConfig(latent_dim=0, embedding_dim=8, hidden_dim=12), vocab_size=30).eval()
    assert model.encoder is None and model.posterior is None
    assert all(name.startswith("decoder.") for name, _ in model.named_parameters())
    embedding, lstm, output = torch.nn.Embedding(30, 8), torch.nn.LSTM(8, 12, batch_first=True), torch.nn.Linear(12, 30)
    embedding.weight.data.copy_(model.decoder.embedding.weight)
    lstm.load_state_dict(model.decoder.lstm.state_dict())
    output.load_state_dict(model.decoder.output.state_dict())
    batch = collate([[5, 6, 7, 8], [9, 10], [11, 12, 13]])
    hidden, _ = lstm(embedding(batch.inputs))  # zero initial state: nothing conditions it
    log_probs = torch.log_softmax(output(hidden), dim=-1).gather(2, batch.targets.unsqueeze(2)).squeeze(2)
    expected = -(log_probs * batch.mask).sum(1)
    result = model(batch)
    assert torch.allclose(result.reconstruction, expected, atol=1e-5)
    assert result.z.shape == (3, 0) and torch.equal(result.posterior.kl(), torch.zeros(3))


def test_language_model_trains_evaluates_exactly_and_reports_z_measures_as_absent(tiny_corpus, tmp_path):
    config = tiny_config(tiny_corpus, tmp_path / "lm", model={"latent_dim": 0}, objective={"word_dropout": 0.0})
    result = train(config, progress=False)
    assert {"nll", "ppl"} <= set(result.valid) and not {"kl", "rec", "elbo", "mi"} & set(result.valid)
    cheap = train(tiny_config(tiny_corpus, tmp_path / "cheap", model={"latent_dim": 0}, train={"validation": "elbo"}), progress=False)
    assert set(cheap.valid) == {"nll", "ppl", "sentences", "tokens"}
    assert result.valid["ppl"] == pytest.approx(math.exp(result.valid["nll"] * result.valid["sentences"] / result.valid["tokens"]))
    train_records = [r for r in _metrics(tmp_path / "lm") if r["split"] == "train"]
    assert "kl" not in train_records[0] and "nll" in train_records[0]
    run = load_run(tmp_path / "lm", device="cpu")
    metrics = run.evaluate("test", iw_samples=5, prior_samples=4)
    for name in ABSENT_FOR_LANGUAGE_MODELS:
        assert name not in metrics
    assert set(ABSENT_FOR_LANGUAGE_MODELS) == set(metrics["absent"])
    assert metrics["nll"] == pytest.approx(metrics["nll_teacher_forced"])
    # the exact NLL: the same with any K, and equal to the training-time validation of the best checkpoint
    assert metrics["nll"] == pytest.approx(run.evaluate("test", iw_samples=50, prior_samples=0)["nll"], rel=1e-6)
    assert run.evaluate("valid", iw_samples=0, prior_samples=0)["nll"] == pytest.approx(result.best_valid, rel=1e-5)
    with pytest.raises(SeqVAEError, match="language model .* has no z"):
        run.reconstruct(["the cat sat ."])
    with pytest.raises(SeqVAEError, match="language model"):
        run.interpolate_codes(torch.zeros(0), torch.zeros(0))


def load_config_with_data(corpus, overrides):
    """A config of only [data] (every other key at its default), with ``overrides``."""
    from seqvae.config import load_config

    return load_config(None, [f"data.{split}={path}" for split, path in corpus.items()] + overrides)


def test_language_model_refuses_settings_that_act_on_z(tiny_corpus, tmp_path):
    for variant in ("total_hinge", "mdr"):
        with pytest.raises(SeqVAEError, match="objective.free_bits.*language model"):
            tiny_config(tiny_corpus, tmp_path, model={"latent_dim": 0}, objective={"free_bits": variant, "free_bits_lambda": 1.0})
    # the default free bits are inert without z: `model.latent_dim=0` alone gives a language model
    config = load_config_with_data(tiny_corpus, ["model.latent_dim=0"])
    assert config.model.latent_dim == 0 and config.objective.free_bits == "per_dimension"
    with pytest.raises(SeqVAEError, match="train.aggressive.*language model"):
        tiny_config(tiny_corpus, tmp_path, model={"latent_dim": 0}, train={"aggressive": True})


# ---- warm start from another run's parts ----


def test_warm_start_copies_exactly_the_named_parts_and_draws_the_rest_from_the_seed(tiny_corpus, tmp_path):
    source = tiny_config(tiny_corpus, tmp_path / "source", train={"epochs": 1})
    train(source, progress=False)
    source_weights = _weights(tmp_path / "source", "best")
    warm = tiny_config(
        tiny_corpus, tmp_path / "warm", run={"seed": 3}, train={"epochs": 1, "max_steps": 1, "init_from": str(tmp_path / "source")}
    )
    from seqvae.data.corpus import load_corpus
    from seqvae.data.tokenizers import build_tokenizer
    from seqvae.training import load_parts

    tokenizer = build_tokenizer(warm.tokenizer, load_corpus(warm.data).splits["train"])
    torch.manual_seed(3)
    model = build_model(warm.model, vocab_size=tokenizer.vocab_size)
    torch.manual_seed(3)
    reference = build_model(warm.model, vocab_size=tokenizer.vocab_size)
    copied = load_parts(model, tmp_path / "source", ("encoder", "posterior"), tokenizer)
    state, drawn = model.state_dict(), reference.state_dict()
    assert copied == sum(key.startswith(("encoder.", "posterior.")) for key in state)
    for key, value in state.items():
        expected = source_weights[key] if key.startswith(("encoder.", "posterior.")) else drawn[key]
        assert torch.equal(value, expected), key
    assert not torch.equal(state["decoder.embedding.weight"], source_weights["decoder.embedding.weight"])
    # through train(): the run starts from those weights and says so in its messages
    said = []
    train(warm, progress=False, echo=said.append)
    assert any("warm start: encoder, posterior" in line for line in said)


def test_warm_start_refuses_another_vocabulary_or_other_sizes(tiny_corpus, tmp_path):
    train(tiny_config(tiny_corpus, tmp_path / "source", train={"epochs": 1}), progress=False)
    other_vocabulary = tiny_config(
        tiny_corpus, tmp_path / "a", tokenizer={"min_frequency": 3}, train={"init_from": str(tmp_path / "source")}
    )
    with pytest.raises(SeqVAEError, match="vocabulary"):
        train(other_vocabulary, progress=False)
    assert not (tmp_path / "a").exists()
    other_sizes = tiny_config(tiny_corpus, tmp_path / "b", model={"hidden_dim": 20}, train={"init_from": str(tmp_path / "source")})
    with pytest.raises(SeqVAEError, match="shape"):
        train(other_sizes, progress=False)
    missing = tiny_config(tiny_corpus, tmp_path / "c", train={"init_from": str(tmp_path / "nowhere")})
    with pytest.raises(SeqVAEError, match="run directory not found"):
        train(missing, progress=False)


@pytest.mark.parametrize("model", [{"posterior": "batchnorm", "posterior_gamma": 0.7}, {"flow": "iaf", "flow_steps": 2, "flow_hidden": 20}],
                         ids=["batchnorm", "iaf"])
def test_warm_start_of_the_projection_alone_leaves_a_posteriors_added_layers_to_the_seed(tiny_corpus, tmp_path, model):
    # an autoencoder's Gaussian posterior warm-starts a BN-VAE's or an IAF's: the projection is
    # copied, the batch normalisation or the flow is drawn from the seed
    train(tiny_config(tiny_corpus, tmp_path / "source", train={"epochs": 1}), progress=False)
    source_weights = _weights(tmp_path / "source", "best")
    objective = {"free_bits": "total_hinge", "free_bits_lambda": 1.0} if "flow" in model else {}

    def warm(name, parts):
        return tiny_config(tiny_corpus, tmp_path / name, model=model, objective=objective, run={"seed": 3},
                           train={"epochs": 1, "max_steps": 1, "init_from": str(tmp_path / "source"), "init_parts": parts})

    with pytest.raises(SeqVAEError, match="the posterior differs .*name posterior.projection"):
        train(warm("whole", ["encoder", "posterior"]), progress=False)
    assert not (tmp_path / "whole").exists()
    with pytest.raises(SeqVAEError, match="posterior.projection is part of posterior"):
        warm("both", ["posterior", "posterior.projection"])

    config = warm("projection", ["encoder", "posterior.projection"])
    from seqvae.data.corpus import load_corpus
    from seqvae.data.tokenizers import build_tokenizer
    from seqvae.training import load_parts

    tokenizer = build_tokenizer(config.tokenizer, load_corpus(config.data).splits["train"])
    torch.manual_seed(3)
    model_ = build_model(config.model, vocab_size=tokenizer.vocab_size)
    torch.manual_seed(3)
    drawn = build_model(config.model, vocab_size=tokenizer.vocab_size).state_dict()
    copied = load_parts(model_, tmp_path / "source", ("encoder", "posterior.projection"), tokenizer)
    state = model_.state_dict()
    kept = ("encoder.", "posterior.projection.")
    added = [key for key in state if key.startswith("posterior.") and not key.startswith("posterior.projection.")]
    assert added and copied == sum(key.startswith(kept) for key in state)
    for key, value in state.items():
        assert torch.equal(value, source_weights[key] if key.startswith(kept) else drawn[key]), key
    said = []
    train(config, progress=False, echo=said.append)
    assert any("warm start: encoder, posterior.projection" in line for line in said)


# ---- aggressive inference-network training ----


def test_inner_loop_stops_when_the_windowed_loss_per_token_stops_falling():
    rule = InnerLoopRule(check_every=3, max_steps=100)
    # windows of 3 steps, 10 tokens each: means 5.0, 4.0, 4.5 -> stop at the end of the third window
    losses = [50, 50, 50, 40, 40, 40, 45, 45, 45, 1, 1, 1]
    stops = [rule.add(loss, 10) for loss in losses[:9]]
    assert stops == [False] * 8 + [True] and rule.steps == 9
    # a loss that keeps falling runs to the cap
    rule = InnerLoopRule(check_every=15, max_steps=100)
    stops = [rule.add(100.0 - step * 0.5, 10) for step in range(100)]
    assert stops.index(True) == 99 and rule.steps == 100


def test_aggressive_mode_switches_off_for_good_at_the_first_epoch_whose_mi_does_not_rise():
    switch = AggressiveSwitch()
    phases = [switch.after_epoch(mi) for mi in [0.5, 1.2, 1.9, 1.7, 2.5, 3.0]]
    assert phases == [True, True, True, False, False, False]
    restored = AggressiveSwitch()
    restored.load_state_dict(AggressiveSwitch(on=True, previous_mi=1.0).state_dict())
    assert restored.after_epoch(1.0) is False  # equal MI did not rise


def test_aggressive_training_updates_only_the_encoder_in_the_inner_loop_and_logs_inner_steps(tiny_corpus, tmp_path):
    config = tiny_config(
        tiny_corpus, tmp_path / "agg",
        train={"epochs": 1, "max_steps": 1, "aggressive": True, "aggressive_check_every": 2, "aggressive_max_inner_steps": 5},
    )
    fresh = tiny_config(tiny_corpus, tmp_path / "fresh", train={"epochs": 1, "max_steps": 0})
    train(fresh, progress=False)
    train(config, progress=False)
    before, after = _weights(tmp_path / "fresh"), _weights(tmp_path / "agg")
    changed = {key.split(".")[0] for key in before if not torch.equal(before[key], after[key])}
    assert changed == {"encoder", "posterior", "decoder"}
    # with the whole rule run for several steps: inner steps are logged per outer step
    logged = tiny_config(
        tiny_corpus, tmp_path / "logged", train={"epochs": 1, "aggressive": True, "aggressive_check_every": 2, "log_every": 5}
    )
    train(logged, progress=False)
    records = _metrics(tmp_path / "logged")
    steps = [r["inner_steps"] for r in records if r["split"] == "train"]
    assert steps and all(2 <= value <= 100 for value in steps)
    assert [r["aggressive"] for r in records if r["split"] == "valid"] == [True]


# ---- BN-VAE ----


@pytest.mark.parametrize("gamma", [0.3, 0.7, 1.0])
def test_batchnorm_posterior_keeps_the_batch_mean_kl_above_its_bound(gamma):
    torch.manual_seed(0)
    latent = 16
    posterior = GaussianPosterior(input_dim=10, latent_dim=latent, batchnorm_gamma=gamma).train()
    for shifted in (False, True):  # the learned shift only adds beta_j^2 / 2 to each dimension
        if shifted:
            with torch.no_grad():
                posterior.mean_norm.bias.normal_()
        for scale in (1.0, 100.0):  # summaries whose means vary well above BatchNorm's epsilon
            q = posterior(scale * torch.randn(64, 10))
            assert float(q.kl().mean().detach()) >= latent * gamma**2 / 2 * (1 - 1e-3)
            assert torch.allclose(q.mean.detach().var(0, unbiased=False), torch.full((latent,), gamma**2), rtol=1e-3)
    assert not posterior.mean_norm.weight.requires_grad and posterior.mean_norm.bias.requires_grad
    # evaluation uses the running statistics: one sentence gives the same mean alone or in a batch
    posterior.eval()
    x = torch.randn(8, 10)
    assert torch.allclose(posterior(x[:1]).mean, posterior(x).mean[:1], atol=1e-6)
    posterior.train()
    assert posterior(x[:1]).mean.shape == (1, latent)  # a batch of one in training: running statistics


# ---- minimum desired rate ----


def test_mdr_multiplier_rises_below_the_target_rate_and_falls_above_it():
    below = MinimumDesiredRate(rate=5.0, learning_rate=0.01, initial=1.0)
    below(torch.tensor(1.0)).backward()
    below.ascend()
    assert below.value > 1.0
    above = MinimumDesiredRate(rate=5.0, learning_rate=0.01, initial=1.0)
    above(torch.tensor(9.0)).backward()
    above.ascend()
    assert above.value < 1.0


def test_mdr_training_logs_the_multiplier(tiny_corpus, tmp_path):
    config = tiny_config(tiny_corpus, tmp_path / "mdr", objective={"free_bits": "mdr", "free_bits_lambda": 50.0}, annealing={"schedule": "constant"})
    train(config, progress=False)
    values = [r["multiplier"] for r in _metrics(tmp_path / "mdr") if r["split"] == "train"]
    assert values[0] > 1.0 and values[-1] > values[0]  # the KL stays under 50 nats: lambda keeps rising


# ---- exact resume for every method ----

METHOD_SETTINGS = {
    "language model": {"model": {"latent_dim": 0}},
    "aggressive": {"train": {"aggressive": True, "aggressive_check_every": 3, "aggressive_max_inner_steps": 7}},
    "bn-vae": {"model": {"posterior": "batchnorm", "posterior_gamma": 0.7}},
    "mdr": {"objective": {"free_bits": "mdr", "free_bits_lambda": 5.0}},
}


@pytest.mark.parametrize("method", list(METHOD_SETTINGS))
def test_each_method_resumes_bit_exactly_after_an_interruption_mid_epoch(tiny_corpus, tmp_path, method):
    settings = {key: dict(value) for key, value in METHOD_SETTINGS[method].items()}
    settings.setdefault("train", {}).update(epochs=2, checkpoint_every=4, log_every=3)
    if method == "language model":
        settings["objective"] = {"word_dropout": 0.2}
    whole = train(tiny_config(tiny_corpus, tmp_path / "whole", **settings), progress=False)
    stopped_settings = {**settings, "train": {**settings["train"], "max_steps": 26}}
    stopped = train(tiny_config(tiny_corpus, tmp_path / "parts", **stopped_settings), progress=False)
    assert stopped.step == 26 and stopped.epoch == 1  # 19 batches an epoch: stopped in epoch 2
    resumed = train(tiny_config(tiny_corpus, tmp_path / "parts", **settings), resume=True, progress=False)
    assert resumed.step == whole.step
    for key, value in _weights(tmp_path / "whole").items():
        assert torch.equal(value, _weights(tmp_path / "parts")[key]), key
    assert _without_stops(tmp_path / "whole") == _without_stops(tmp_path / "parts")


def test_aggressive_resumes_bit_exactly_after_it_switched_off(tiny_corpus, tmp_path, monkeypatch):
    # validation MI scripted to fall after epoch 2: aggressive mode ends there; resume in epoch 3
    import seqvae.evaluation.split

    scripted = []

    def scripted_mi(*args, **kwargs):
        scripted.append(None)
        return [1.0, 0.5, 0.7, 0.7][len(scripted) - 1]  # the fourth: the parts run's stop validation

    monkeypatch.setattr(seqvae.evaluation.split, "mutual_information", scripted_mi)  # validation's MI
    settings = {"train": {"epochs": 3, "aggressive": True, "aggressive_check_every": 3, "aggressive_max_inner_steps": 4, "checkpoint_every": 5}}
    train(tiny_config(tiny_corpus, tmp_path / "whole", **settings), progress=False)
    phases = [r["aggressive"] for r in _metrics(tmp_path / "whole") if r["split"] == "valid"]
    assert phases == [True, False, False]
    inner = [r["inner_steps"] for r in _metrics(tmp_path / "whole") if r["split"] == "train"]
    assert inner[0] > 0 and inner[-1] == 0  # no inner loop once aggressive mode is off
    scripted.clear()
    stopped = {"train": {**settings["train"], "max_steps": 45}}  # 19 batches an epoch: in epoch 3
    train(tiny_config(tiny_corpus, tmp_path / "parts", **stopped), progress=False)
    train(tiny_config(tiny_corpus, tmp_path / "parts", **settings), resume=True, progress=False)
    assert [r["aggressive"] for r in _without_stops(tmp_path / "parts") if r["split"] == "valid"] == phases
    for key, value in _weights(tmp_path / "whole").items():
        assert torch.equal(value, _weights(tmp_path / "parts")[key]), key
    assert _without_stops(tmp_path / "whole") == _without_stops(tmp_path / "parts")


# ---- every --method of the PTB recipe, end to end on a tiny stand-in ----


def _ptb_recipe(name: str = "run"):
    spec = importlib.util.spec_from_file_location(f"ptb_{name}", REPO / "recipes" / "ptb" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def ptb_stand_in(tiny_corpus, tmp_path_factory):
    data = tmp_path_factory.mktemp("ptb")
    for split in ("train", "valid", "test"):
        lines = tiny_corpus[split].read_text().splitlines()[:60]
        (data / f"ptb.{split}.txt").write_text("".join(f" {line} \n" for line in lines))
    return data


@pytest.mark.parametrize("method", ["lm", "lm-tied", "annealing", "cyclical", "aggressive", "ae-fb", "bn-vae", "mdr", "iaf", "ae-fb-tied", "seqvae-best",
                                    "seqvae-best-sgd"])
def test_each_ptb_method_runs_end_to_end(ptb_stand_in, tmp_path, monkeypatch, capsys, method):
    recipe = _ptb_recipe()
    monkeypatch.chdir(tmp_path)
    tiny = ["train.epochs=1", "model.hidden_dim=16", "model.embedding_dim=8", "model.output_layer=softmax", "train.batch_size=16",
            "model.flow_hidden=8"]
    language_model = method in ("lm", "lm-tied")
    if not language_model:
        tiny.append("model.latent_dim=4")
    arguments = ["--data-dir", str(ptb_stand_in), "--method", method, "--iw-samples", "3", "--eval", "test", *tiny]
    assert recipe.main(arguments + ["--results", "row.json"]) == 0
    out = capsys.readouterr().out
    assert "test (best checkpoint):" in out
    # the row file makes a row of RESULTS.md: the figures it printed, with what produced them
    row = json.loads((tmp_path / "row.json").read_text())
    cells = _ptb_recipe("results").row_cells(method, row)
    assert len(cells) == len(_ptb_recipe("results").COLUMNS) and row["method"] == method and f"--method {method}" in row["command"]
    assert cells[3].startswith(f"{row['ppl']:.2f}" if language_model else f"{row['ppl_iw']:.2f}")
    how = _ptb_recipe("results").run_cells(method, row)
    assert len(how) == len(_ptb_recipe("results").RUN_COLUMNS) and how[-1] == f"`{row['command']}`" and how[1] == "0"
    run_dir = tmp_path / "runs" / f"ptb-{method}"
    config = (run_dir / "config.toml").read_text()
    # the row names the optimiser and initialisation its run was trained with (they move the figures)
    saved = tomllib.loads(config)
    assert (row["optimizer"], row["learning_rate"], row["init"]) == (saved["train"]["optimizer"], saved["train"]["learning_rate"], saved["model"]["init"])
    optimiser = {"adam": "Adam", "sgd": "SGD"}[saved["train"]["optimizer"]] + f" {saved['train']['learning_rate']:g}"
    assert cells[2] == (f"{optimiser}, uniform init" if saved["model"]["init"] == "uniform" else optimiser)
    if method == "lm-tied":
        assert "tie_embeddings = true" in config and 'init = "uniform"' in config
    if language_model:
        assert "latent_dim = 0" in config and "absent" in out and "\n  ppl_iw" not in out and "\n  ppl " in out
    else:
        assert "\n  ppl_iw" in out and "latent_dim = 4" in config
    if method == "ae-fb-tied":  # ae-fb's second stage with a tied, uniformly initialised decoder, on ae-fb's autoencoder
        assert "tie_embeddings = true" in config and 'init = "uniform"' in config and "free_bits_lambda = 0.25" in config
        assert f'init_from = "{tmp_path / "runs" / "ptb-ae-fb-ae"}"' in config and not (tmp_path / "runs" / "ptb-ae-fb-tied-ae").exists()
    if method == "ae-fb":
        stage_one = (tmp_path / "runs" / "ptb-ae-fb-ae" / "config.toml").read_text()
        assert "beta = 0.0" in stage_one and 'best_metric = "rec"' in stage_one
        assert f'init_from = "{tmp_path / "runs" / "ptb-ae-fb-ae"}"' in config
        # --resume with both stages finished trains nothing more and evaluates again
        assert recipe.main(arguments + ["--resume"]) == 0
        # interrupted in stage 1: stage 2 waits; --resume finishes stage 1, then trains stage 2
        assert recipe.main(arguments + ["--overwrite", "train.max_steps=2"]) == 0
        assert "stage 1 stopped before its last epoch" in capsys.readouterr().out
        assert not run_dir.exists()  # --overwrite replaced stage 1: the stage 2 trained from the old one is gone
        assert recipe.main(arguments + ["--resume"]) == 0
        assert "test (best checkpoint):" in capsys.readouterr().out
        assert torch.load(run_dir / "checkpoints" / "last.pt", weights_only=True)["epoch"] == 1


def _ae_fb_trained(ptb_stand_in, tmp_path, monkeypatch):
    """The recipe, its tiny arguments and the ae-fb autoencoder stage, trained in tmp_path."""
    recipe = _ptb_recipe()
    monkeypatch.chdir(tmp_path)
    tiny = ["--data-dir", str(ptb_stand_in), "--eval", "none", "train.epochs=1", "model.hidden_dim=16", "model.embedding_dim=8",
            "model.output_layer=softmax", "train.batch_size=16", "model.latent_dim=4"]
    stage_one = tmp_path / "runs" / "ptb-ae-fb-ae"
    assert recipe.main(["--method", "ae-fb", *tiny]) == 0
    return recipe, tiny, stage_one


def test_seqvae_best_trains_on_the_ae_fb_autoencoder_without_training_or_replacing_it(ptb_stand_in, tmp_path, monkeypatch, capsys):
    recipe, tiny, stage_one = _ae_fb_trained(ptb_stand_in, tmp_path, monkeypatch)
    trained = (stage_one / "checkpoints" / "last.pt").read_bytes()
    log = (stage_one / "metrics.jsonl").read_text()
    for extra in ([], ["--overwrite"]):  # neither a plain run nor --overwrite retrains the shared stage
        assert recipe.main(["--method", "seqvae-best", *tiny, *extra]) == 0
        assert "shared with --method ae-fb" in capsys.readouterr().out
        assert (stage_one / "checkpoints" / "last.pt").read_bytes() == trained
        assert (stage_one / "metrics.jsonl").read_text() == log
        assert not (tmp_path / "runs" / "ptb-seqvae-best-ae").exists()
    config = (tmp_path / "runs" / "ptb-seqvae-best" / "config.toml").read_text()
    assert f'init_from = "{stage_one}"' in config
    assert "tie_embeddings = true" in config and 'init = "uniform"' in config and "free_bits_lambda = 0.4" in config
    # a stage 1 of another setting in the same directory is refused, not replaced
    assert recipe.main(["--method", "seqvae-best", *tiny, "model.hidden_dim=12", "--overwrite"]) == 2
    assert "cannot resume with model.hidden_dim=12" in capsys.readouterr().err
    assert (stage_one / "checkpoints" / "last.pt").read_bytes() == trained
    # stopped before its first checkpoint, a stage has nothing to continue: it is trained again
    (stage_one / "checkpoints" / "last.pt").unlink()
    assert recipe.main(["--method", "seqvae-best", *tiny, "--overwrite"]) == 0
    assert "has no checkpoint yet: starting it again" in capsys.readouterr().out
    assert (stage_one / "checkpoints" / "last.pt").is_file()


def test_seqvae_best_sgd_shares_the_autoencoder_of_the_full_softmax_ae_fb_row(ptb_stand_in, tmp_path, monkeypatch, capsys):
    # its one command trains stage 1 where the ae-fb-softmax row's command keeps it, in that row's
    # setting, and the other command then reuses it; stage 2 is the full softmax with SGD
    recipe = _ptb_recipe()
    monkeypatch.chdir(tmp_path)
    tiny = ["--data-dir", str(ptb_stand_in), "--eval", "none", "train.epochs=1", "model.hidden_dim=16", "model.embedding_dim=8",
            "train.batch_size=16", "model.latent_dim=4"]
    assert recipe.main(["--method", "seqvae-best-sgd", *tiny]) == 0
    stage_one = tmp_path / "runs" / "ptb-ae-fb-softmax-ae"
    saved = tomllib.loads((stage_one / "config.toml").read_text())
    assert (saved["model"]["output_layer"], saved["model"]["init"]) == ("softmax", "uniform")
    assert (saved["train"]["optimizer"], saved["train"]["learning_rate"], saved["train"]["lr_patience"]) == ("sgd", 0.5, 5)
    assert saved["annealing"]["beta"] == 0.0 and not (tmp_path / "runs" / "ptb-ae-fb-ae").exists()
    config = tomllib.loads((tmp_path / "runs" / "ptb-seqvae-best-sgd" / "config.toml").read_text())
    assert config["train"]["init_from"] == str(stage_one) and config["objective"]["free_bits_lambda"] == 0.35
    assert (config["model"]["output_layer"], config["train"]["optimizer"], config["model"]["tie_embeddings"]) == ("softmax", "sgd", False)
    trained = (stage_one / "checkpoints" / "last.pt").read_bytes()
    capsys.readouterr()
    # the ae-fb-softmax row's command (README.md, "Two settings") finds its stage 1 trained
    row = ["model.output_layer=softmax", "model.init=uniform", "train.optimizer=sgd", "train.learning_rate=0.5",
           "train.lr_patience=5", "run.dir=runs/ptb-ae-fb-softmax"]
    assert recipe.main(["--method", "ae-fb", *tiny, *row, "--resume"]) == 0
    assert (stage_one / "checkpoints" / "last.pt").read_bytes() == trained
    assert (tmp_path / "runs" / "ptb-ae-fb-softmax" / "checkpoints" / "best.pt").is_file()
    # and seqvae-best-sgd run again reuses it, saying whose it is
    assert recipe.main(["--method", "seqvae-best-sgd", *tiny, "--overwrite"]) == 0
    assert "shared with --method ae-fb model.output_layer=softmax" in capsys.readouterr().out
    assert (stage_one / "checkpoints" / "last.pt").read_bytes() == trained


def test_from_trains_only_the_last_stage_from_the_given_autoencoder(ptb_stand_in, tmp_path, monkeypatch, capsys):
    # --from: stage 2 alone, warm-started from an autoencoder trained elsewhere; a copy that keeps
    # only best.pt's encoder and posterior (what crosses to a GPU machine) is enough
    recipe, tiny, stage_one = _ae_fb_trained(ptb_stand_in, tmp_path, monkeypatch)
    copy = tmp_path / "elsewhere" / "ae"
    (copy / "checkpoints").mkdir(parents=True)
    payload = torch.load(stage_one / "checkpoints" / "best.pt", weights_only=True)
    kept = {key: value for key, value in payload["model"].items() if key.startswith(("encoder.", "posterior."))}
    slim = {key: value for key, value in payload.items() if key not in ("model", "optimizer")}
    torch.save({**slim, "model": kept}, copy / "checkpoints" / "best.pt")
    capsys.readouterr()
    assert recipe.main(["--method", "ae-fb", *tiny, "--from", str(copy), "run.dir=runs/stage-two", "--eval", "test", "--iw-samples", "2",
                        "--results", "two.json"]) == 0
    out = capsys.readouterr().out
    # the row's training time counts the given stage too (up to its best checkpoint: the copy has no last.pt)
    first, second = json.loads((tmp_path / "two.json").read_text())["stages"]
    assert first["run_dir"] == str(copy) and first["train_seconds"] == round(payload["train_seconds"], 3) > 0 and "best" in first["note"]
    assert second["run_dir"] == "runs/stage-two" and second["train_seconds"] > 0
    assert "stage 1 of" not in out and f"warm start: encoder, posterior ({len(kept)} tensors) from {copy}" in out
    assert f'init_from = "{copy}"' in (tmp_path / "runs" / "stage-two" / "config.toml").read_text()
    assert not (tmp_path / "runs" / "stage-two-ae").exists()
    stage_two = torch.load(tmp_path / "runs" / "stage-two" / "checkpoints" / "last.pt", weights_only=True)["model"]
    assert stage_two["encoder.embedding.weight"].shape == kept["encoder.embedding.weight"].shape
    # a one-stage method has nothing to start from; a directory without best.pt is no stage
    assert recipe.main(["--method", "annealing", *tiny, "--from", str(copy)]) == 2
    assert "--from " + str(copy) + ": --method annealing has one stage" in capsys.readouterr().err
    assert recipe.main(["--method", "ae-fb", *tiny, "--from", str(tmp_path / "elsewhere")]) == 2
    err = capsys.readouterr().err
    assert "no checkpoints/best.pt" in err and "Traceback" not in err


def test_a_shared_stage_in_training_by_the_other_method_is_waited_for(ptb_stand_in, tmp_path, monkeypatch, capsys):
    # ae-fb and seqvae-best started together: the second waits for the autoencoder, then reuses it
    recipe, tiny, stage_one = _ae_fb_trained(ptb_stand_in, tmp_path, monkeypatch)
    capsys.readouterr()
    released = tmp_path / "released"
    holder = subprocess.Popen(
        [sys.executable, "-c", "from seqvae.locks import run_directory_lock\nimport pathlib, time\n"
         f"with run_directory_lock({str(stage_one)!r}):\n    print('held', flush=True)\n    time.sleep(2)\n"
         f"    pathlib.Path({str(released)!r}).write_text('')"],
        stdout=subprocess.PIPE, text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "held"
        assert recipe.main(["--method", "seqvae-best", *tiny]) == 0
    finally:
        holder.kill()
        holder.wait(timeout=30)
    assert f"runs/ptb-ae-fb-ae is being trained by process {holder.pid}: waiting for it to finish" in capsys.readouterr().out
    # nothing of stage 2 was written before the holder let go
    assert released.is_file()
    assert (tmp_path / "runs" / "ptb-seqvae-best" / "config.toml").stat().st_mtime_ns >= released.stat().st_mtime_ns


def test_ctrl_c_in_the_final_evaluation_ends_quietly_and_resume_evaluates(ptb_stand_in, tmp_path, monkeypatch, capsys):
    recipe, tiny, _ = _ae_fb_trained(ptb_stand_in, tmp_path, monkeypatch)
    capsys.readouterr()

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    with monkeypatch.context() as patch:
        patch.setattr(recipe, "load_run", interrupted)  # Ctrl-C once training has finished
        assert recipe.main(["--method", "ae-fb", *tiny, "--resume"]) == 130
    err = capsys.readouterr().err
    assert "ptb: interrupted; rerun this command with --resume to continue from the last checkpoint" in err and "Traceback" not in err
    assert recipe.main(["--method", "ae-fb", *tiny, "--resume"]) == 0
    assert "five sentences decoded" in capsys.readouterr().out


@pytest.mark.parametrize("method", list(METHOD_SETTINGS))
def test_each_method_trains_with_the_transformer_pair(tiny_corpus, tmp_path, method):
    settings = {key: dict(value) for key, value in METHOD_SETTINGS[method].items()}
    settings.setdefault("model", {}).update(encoder="transformer", decoder="transformer", injection=["memory"], num_heads=2, ff_dim=32)
    settings.setdefault("train", {}).update(epochs=1, max_steps=12)
    result = train(tiny_config(tiny_corpus, tmp_path / "run", **settings), progress=False)
    assert result.step == 12
    metrics = load_run(tmp_path / "run", checkpoint="last", device="cpu").evaluate("valid", iw_samples=3, prior_samples=2)
    assert math.isfinite(metrics["nll"] if method == "language model" else metrics["nll_iw"])


def test_ptb_results_table_is_in_step_with_the_result_files():
    # RESULTS.md shows exactly what the rows' commands wrote (recipes/ptb/results/*.json)
    results = _ptb_recipe("results")
    document = results.DOCUMENT.read_text(encoding="utf-8")
    shown = document.split(results.BEGIN, 1)[1].split(results.END, 1)[0].strip()
    assert shown == results.table()


def test_every_committed_ptb_result_is_a_whole_test_set_evaluation_at_k_500():
    # each row of RESULTS.md measured on the same thing: the whole PTB test split (3,761 sentences,
    # 82,430 words + EOS), and for a VAE the IW bound with K = 500, as the published table
    results = _ptb_recipe("results")
    files = sorted(results.RESULTS.glob("*.json"))
    assert len(files) >= 7
    for path in files:
        row = json.loads(path.read_text(encoding="utf-8"))
        assert (row.get("split"), row.get("sentences"), row.get("tokens")) == ("test", 3761, 82430), path.name
        assert row.get("truncated") == 0 and row.get("dropped") == 0, path.name
        if "nll_iw" in row:  # a VAE row (a language model's NLL is exact)
            assert row.get("iw_samples") == 500, path.name
        else:
            assert row.get("method", "").startswith("lm") and "nll" in row, path.name
        # the training-time column counts every stage (an autoencoder stage, shared or not)
        two_stages = row["method"] in ("ae-fb", "seqvae-best", "seqvae-best-sgd")
        assert len(row.get("stages", [None])) == (2 if two_stages else 1), path.name
        assert results.training_seconds(row) >= row["train_seconds"] > 0


def test_ptb_results_keep_each_output_layer_in_its_own_table(tmp_path, monkeypatch):
    # the issue: every row of one table uses the same output layer; a full-softmax row goes in its own
    results = _ptb_recipe("results")
    row = json.loads((results.RESULTS / "lm.json").read_text(encoding="utf-8"))
    for name, layer in (("lm", "adaptive"), ("lm-softmax", "softmax"), ("annealing", "adaptive")):
        (tmp_path / f"{name}.json").write_text(json.dumps({**row, "output_layer": layer}), encoding="utf-8")
    monkeypatch.setattr(results, "RESULTS", tmp_path)
    text = results.table()
    adaptive, softmax = text.split("Rows with the full softmax")
    assert "`lm` | adaptive" in adaptive and "`annealing` | adaptive" in adaptive and "lm-softmax" not in adaptive.split("How")[0]
    assert "`lm-softmax` | softmax" in softmax.split("How each row")[0] and "`annealing`" not in softmax.split("How each row")[0]
    (tmp_path / "lm.json").write_text(json.dumps({**row, "output_layer": "hierarchical"}), encoding="utf-8")
    with pytest.raises(SystemExit, match="lm.json: output_layer 'hierarchical' has no table"):
        results.table()


def test_ptb_results_name_each_rows_optimiser(tmp_path, monkeypatch):
    # with the full softmax the optimiser and initialisation decide the figures (Adam overfits, SGD
    # with He et al.'s init does not), so every row says which it had, and a row that does not is refused
    results = _ptb_recipe("results")
    row = json.loads((results.RESULTS / "lm.json").read_text(encoding="utf-8"))
    (tmp_path / "lm.json").write_text(json.dumps({**row, "optimizer": "sgd", "learning_rate": 1.0, "init": "uniform"}), encoding="utf-8")
    (tmp_path / "annealing.json").write_text(json.dumps({**row, "optimizer": "adam", "learning_rate": 0.001, "init": "pytorch"}), encoding="utf-8")
    monkeypatch.setattr(results, "RESULTS", tmp_path)
    text = results.table()
    assert "| `lm` | adaptive | SGD 1, uniform init | 102.37" in text and "| `annealing` | adaptive | Adam 0.001 | 102.37" in text
    (tmp_path / "annealing.json").write_text(json.dumps({key: value for key, value in row.items() if key != "optimizer"}), encoding="utf-8")
    with pytest.raises(SystemExit, match="annealing.json: no 'optimizer'"):
        results.table()


def test_ptb_results_give_a_rows_spread_over_its_seeds(tmp_path, monkeypatch):
    # issue 34: a row trained again with other seeds (NAME-seedN.json) keeps seed 0's figures in its
    # table and gets the mean and sample standard deviation over all its seeds in a table of its own
    results = _ptb_recipe("results")
    lm = json.loads((results.RESULTS / "lm.json").read_text(encoding="utf-8"))
    vae = json.loads((results.RESULTS / "ae-fb.json").read_text(encoding="utf-8"))
    figures = {0: (100.0, 9.0, 6.0, 32), 1: (102.0, 8.0, 5.5, 31), 2: (104.5, 10.0, 6.1, 32)}
    for seed, (ppl, kl, mi, au) in figures.items():
        name = "ae-fb" if seed == 0 else f"ae-fb-seed{seed}"
        (tmp_path / f"{name}.json").write_text(json.dumps(
            {**vae, "seed": seed, "ppl_iw": ppl, "kl": kl, "mi": mi, "active_units": au}), encoding="utf-8")
    (tmp_path / "lm.json").write_text(json.dumps(lm), encoding="utf-8")
    monkeypatch.setattr(results, "RESULTS", tmp_path)
    text = results.table()
    assert "| `ae-fb` | adaptive | Adam 0.001 | 100.00 |" in text  # the row's own table: seed 0
    seeds_table = text.split("more than one seed")[1].split("How each row")[0]
    # 100, 102, 104.5: mean 102.1667, sample sd sqrt(((-2.1667)^2 + (-0.1667)^2 + 2.3333^2) / 2) = 2.2546
    assert "| `ae-fb` | 0, 1, 2 | 102.17 ± 2.25 |" in seeds_table and "| 9.00 ± 1.00 | 5.87 ± 0.32 | 31.7 ± 0.6 |" in seeds_table
    assert "100.00, 102.00, 104.50" in seeds_table and "`lm`" not in seeds_table
    assert [line.split(" | ")[1] for line in text.split("How each row")[1].splitlines() if line.startswith("| `ae-fb`")] == ["0", "1", "2"]

    bad = tmp_path / "ae-fb-seed1.json"
    bad.write_text(json.dumps({**vae, "seed": 3}), encoding="utf-8")
    with pytest.raises(SystemExit, match="ae-fb-seed1.json: its seed is 3, its name says 1"):
        results.table()
    bad.write_text(json.dumps({**vae, "seed": 1, "learning_rate": 0.002}), encoding="utf-8")
    with pytest.raises(SystemExit, match="ae-fb-seed1.json: learning_rate 0.002 is not ae-fb.json's 0.001"):
        results.table()
    bad.unlink()
    (tmp_path / "lm-seed1.json").write_text(json.dumps({**lm, "seed": 1}), encoding="utf-8")
    (tmp_path / "lm.json").unlink()
    with pytest.raises(SystemExit, match=r"lm-seed1.json: no lm.json \(seed 0\)"):
        results.table()


def test_earlier_stages_trains_the_shared_autoencoder_alone_for_seeds_to_start_from(ptb_stand_in, tmp_path, monkeypatch, capsys):
    # the full-softmax rows' autoencoder, trained once, then a second stage with another seed from it
    recipe = _ptb_recipe()
    monkeypatch.chdir(tmp_path)
    tiny = ["--data-dir", str(ptb_stand_in), "--eval", "none", "train.epochs=1", "model.hidden_dim=16", "model.embedding_dim=8",
            "train.batch_size=16", "model.latent_dim=4"]
    assert recipe.main(["--method", "seqvae-best-sgd", "--earlier-stages", *tiny]) == 0
    stage_one = tmp_path / "runs" / "ptb-ae-fb-softmax-ae"
    assert f"{Path('runs/ptb-ae-fb-softmax-ae')}: trained; train the last stage from it with --from" in capsys.readouterr().out
    assert (stage_one / "checkpoints" / "best.pt").is_file() and sorted(p.name for p in (tmp_path / "runs").iterdir() if not p.name.startswith(".")) == [stage_one.name]
    assert tomllib.loads((stage_one / "config.toml").read_text())["train"]["optimizer"] == "sgd"
    trained = (stage_one / "checkpoints" / "last.pt").read_bytes()
    # run again, it is continued (finished: nothing more), never replaced
    assert recipe.main(["--method", "seqvae-best-sgd", "--earlier-stages", "--resume", *tiny]) == 0
    assert (stage_one / "checkpoints" / "last.pt").read_bytes() == trained
    row = ["model.output_layer=softmax", "model.init=uniform", "train.optimizer=sgd", "train.learning_rate=0.5", "train.lr_patience=5"]
    assert recipe.main(["--method", "ae-fb", *tiny, *row, "--from", str(stage_one), "run.seed=1", "run.dir=runs/seed1"]) == 0
    saved = tomllib.loads((tmp_path / "runs" / "seed1" / "config.toml").read_text())
    assert saved["run"]["seed"] == 1 and saved["train"]["init_from"] == str(stage_one)
    # refused in one line: a one-stage method, with --from, with --results
    for extra, why in ((["--method", "annealing"], "--method annealing has one stage"),
                       (["--method", "ae-fb", "--from", str(stage_one)], "trains no earlier stage with --from"),
                       (["--method", "ae-fb", "--results", "row.json"], "writes no row with --results")):
        assert recipe.main([*extra, "--earlier-stages", *tiny]) == 2
        assert f"--earlier-stages: {why}" in capsys.readouterr().err

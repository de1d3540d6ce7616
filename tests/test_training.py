import json
import math

import pytest
import torch

from seqvae.config import load_config
from seqvae.data.synthetic import ATTRIBUTES, labels_path
from seqvae.errors import SeqVAEError
from seqvae.generation import Decoding
from seqvae.runs import load_run
from seqvae.training import load_trained_model, train

from conftest import metrics as _metrics, tiny_config, without_stops as _without_stops




def _weights(run_dir, name="last"):
    return torch.load(run_dir / "checkpoints" / f"{name}.pt", weights_only=True)["model"]


def test_run_directory_holds_config_tokenizer_checkpoints_and_metrics(tiny_corpus, tmp_path):
    config = tiny_config(tiny_corpus, tmp_path / "run")
    result = train(config, progress=False)
    run_dir = tmp_path / "run"
    assert load_config(run_dir / "config.toml") == config
    assert (run_dir / "tokenizer.json").is_file()
    assert (run_dir / "checkpoints" / "best.pt").is_file() and (run_dir / "checkpoints" / "last.pt").is_file()
    records = _metrics(run_dir)
    train_records = [r for r in records if r["split"] == "train"]
    valid_records = [r for r in records if r["split"] == "valid"]
    assert len(valid_records) == 2 and [r["epoch"] for r in valid_records] == [1, 2]
    assert {"rec", "kl", "beta", "loss"} <= set(train_records[0])
    assert {"rec", "kl", "elbo", "ppl_elbo"} <= set(valid_records[0])
    assert valid_records[-1]["elbo"] == pytest.approx(valid_records[-1]["rec"] + valid_records[-1]["kl"], rel=1e-5)
    assert result.valid["elbo"] == pytest.approx(valid_records[-1]["elbo"], rel=1e-5)
    data = json.loads((run_dir / "data.json").read_text())
    assert data["train"]["sentences"] == 300 and data["valid"]["tokens_with_eos"] == result.valid["tokens"]


@pytest.mark.parametrize("model", [{}, {"output_layer": "adaptive", "adaptive_cutoffs": [20, 40]}])
def test_resume_equals_an_uninterrupted_run(tiny_corpus, tmp_path, model):
    settings = {"train": {"epochs": 3, "checkpoint_every": 4, "log_every": 3}, "model": model}
    whole = tiny_config(tiny_corpus, tmp_path / "whole", **settings)
    train(whole, progress=False)
    # 300 sentences / 16 = 19 batches an epoch: stop mid-way through epoch 2, then resume
    parts = tiny_config(tiny_corpus, tmp_path / "parts", **{**settings, "train": {**settings["train"], "max_steps": 26}})
    stopped = train(parts, progress=False)
    assert stopped.step == 26 and stopped.epoch == 1
    resumed_config = tiny_config(tiny_corpus, tmp_path / "parts", **settings)
    resumed = train(resumed_config, resume=True, progress=False)
    assert resumed.resumed_from_step == 26 and resumed.step == 57
    for key, value in _weights(tmp_path / "whole").items():
        assert torch.equal(value, _weights(tmp_path / "parts")[key]), key
    assert _without_stops(tmp_path / "whole") == _without_stops(tmp_path / "parts")
    stops = [r for r in _metrics(tmp_path / "parts") if "stopped_by" in r]
    assert [(r["step"], r["stopped_by"]) for r in stops] == [(26, "train.max_steps")]


@pytest.mark.parametrize("pause", [12, 19])  # mid-epoch, and at the start of epoch 2 (19 batches an epoch)
def test_a_pause_then_a_longer_wsd_schedule_equals_that_schedule_run_whole(tiny_corpus, tmp_path, pause):
    # train(pause_at_step=...) ends a sitting with nothing else changed (no validation, the
    # schedule untouched), so the text recipe can measure a stage and then lengthen it: a paused
    # run resumed with a larger train.max_steps, before its decay began, is the longer run exactly
    schedule = {"lr_decay": "wsd", "lr_warmup_steps": 4, "lr_decay_steps": 10, "epochs": 100, "checkpoint_every": 0,
                "log_every": 1}
    whole = train(tiny_config(tiny_corpus, tmp_path / "whole", train={**schedule, "max_steps": 40}), progress=False)
    said = []
    paused = train(tiny_config(tiny_corpus, tmp_path / "parts", train={**schedule, "max_steps": 30}), progress=False,
                   pause_at_step=pause, echo=said.append)
    assert paused.step == pause and not paused.finished and said[-1].startswith(f"paused at step {pause} ")
    assert not [r for r in _metrics(tmp_path / "parts") if r["split"] == "valid" and r["step"] == pause and pause != 19]
    again = train(tiny_config(tiny_corpus, tmp_path / "parts", train={**schedule, "max_steps": 30}), resume=True,
                  progress=False, pause_at_step=pause)  # already there: pauses at once
    assert again.step == pause
    resumed = train(tiny_config(tiny_corpus, tmp_path / "parts", train={**schedule, "max_steps": 40}), resume=True, progress=False)
    assert resumed.step == whole.step == 40
    for key, value in _weights(tmp_path / "whole").items():
        assert torch.equal(value, _weights(tmp_path / "parts")[key]), key
    assert _without_stops(tmp_path / "whole") == _without_stops(tmp_path / "parts")


def test_a_moved_run_directory_resumes_where_it_now_is(tiny_corpus, tmp_path):
    settings = {"train": {"epochs": 2, "checkpoint_every": 4, "log_every": 3}}
    train(tiny_config(tiny_corpus, tmp_path / "whole", **settings), progress=False)
    stopped = {**settings, "train": {**settings["train"], "max_steps": 26}}
    train(tiny_config(tiny_corpus, tmp_path / "before", **stopped), progress=False)
    (tmp_path / "before").rename(tmp_path / "after")
    resumed = train(tiny_config(tiny_corpus, tmp_path / "after", **settings), resume=True, progress=False)
    assert resumed.resumed_from_step == 26 and resumed.finished
    assert load_config(tmp_path / "after" / "config.toml").run.dir == str(tmp_path / "after")
    assert not (tmp_path / "before").exists()
    for key, value in _weights(tmp_path / "whole").items():
        assert torch.equal(value, _weights(tmp_path / "after")[key]), key


def test_a_resumed_run_reads_its_checkpoint_on_the_cpu_whatever_its_device(tiny_corpus, tmp_path):
    # Found on an H200: reading last.pt onto the run's GPU made the CPU RNG state a CUDA tensor,
    # which torch.set_rng_state refuses, so no CUDA run could resume. The payload must come back
    # on the CPU for a CUDA trainer too (here a CPU-only torch cannot even map onto CUDA).
    # (The reader takes no device: whatever the run's, the payload is read onto the CPU.)
    from seqvae.distributed import SINGLE
    from seqvae.training.checkpointing import read_checkpoint

    train(tiny_config(tiny_corpus, tmp_path / "run", train={"max_steps": 3}), progress=False)
    payload = read_checkpoint(SINGLE, tmp_path / "run" / "checkpoints" / "last.pt")
    assert payload["rng_cpu"].device.type == "cpu" and payload["rng_cpu"].dtype == torch.uint8
    assert all(value.device.type == "cpu" for value in payload["model"].values())
    torch.set_rng_state(payload["rng_cpu"])


def test_resume_after_a_crash_drops_metrics_past_the_checkpoint(tiny_corpus, tmp_path):
    settings = {"train": {"epochs": 2, "checkpoint_every": 5, "log_every": 2}}
    whole = tiny_config(tiny_corpus, tmp_path / "whole", **settings)
    train(whole, progress=False)
    crashed = tiny_config(tiny_corpus, tmp_path / "crashed", **settings)
    train(crashed, progress=False)
    # simulate a crash after step 12: the last checkpoint on disk is the one from step 10
    checkpoint = tmp_path / "crashed" / "checkpoints" / "last.pt"
    payload = torch.load(checkpoint, weights_only=True)
    partial = tiny_config(tiny_corpus, tmp_path / "partial", **{"train": {**settings["train"], "max_steps": 10}})
    train(partial, progress=False)
    partial_payload = torch.load(tmp_path / "partial" / "checkpoints" / "last.pt", weights_only=True)
    assert partial_payload["step"] == 10 and payload["step"] == 38
    torch.save(partial_payload, checkpoint)
    train(crashed, resume=True, progress=False)
    assert _without_stops(tmp_path / "whole") == _without_stops(tmp_path / "crashed")
    for key, value in _weights(tmp_path / "whole").items():
        assert torch.equal(value, _weights(tmp_path / "crashed")[key]), key


def test_resume_refuses_a_changed_config(tiny_corpus, tmp_path):
    config = tiny_config(tiny_corpus, tmp_path / "run", train={"epochs": 1})
    train(config, progress=False)
    changed = tiny_config(tiny_corpus, tmp_path / "run", model={"latent_dim": 8}, train={"epochs": 2})
    with pytest.raises(SeqVAEError, match="cannot resume with model.latent_dim=8"):
        train(changed, resume=True, progress=False)


def test_save_then_load_gives_identical_logits(tiny_corpus, tmp_path):
    config = tiny_config(tiny_corpus, tmp_path / "run", train={"epochs": 1})
    train(config, progress=False)
    first, tokenizer, _ = load_trained_model(tmp_path / "run", checkpoint="last")
    second, _, _ = load_trained_model(tmp_path / "run", checkpoint="last")
    from seqvae.data.batching import collate

    batch = collate([tokenizer.encode("the coach will win the poor tournament .")])
    z = torch.randn(1, config.model.latent_dim)
    torch.testing.assert_close(first.decoder(batch.inputs, z)[0], second.decoder(batch.inputs, z)[0], rtol=0, atol=0)
    torch.testing.assert_close(first.encode(batch).mean, second.encode(batch).mean, rtol=0, atol=0)


def test_run_api_samples_reconstructs_and_interpolates(tiny_corpus, tmp_path):
    train(tiny_config(tiny_corpus, tmp_path / "run", train={"epochs": 1}), progress=False)
    run = load_run(tmp_path / "run", device="cpu")
    samples = run.sample(4, seed=3)
    assert len(samples) == 4 and samples == run.sample(4, seed=3)
    path = run.interpolate("the coach will win the poor tournament .", "some violinists record a dreadful melody .", steps=4)
    assert [t for t, _ in path] == pytest.approx([0.0, 1 / 3, 2 / 3, 1.0])
    metrics = run.evaluate("test")
    assert metrics["sentences"] == 60 and metrics["elbo"] == pytest.approx(metrics["rec"] + metrics["kl"])


@pytest.mark.parametrize("metric", ["elbo", "rec"])
def test_best_checkpoint_follows_the_chosen_validation_measure(tiny_corpus, tmp_path, metric):
    config = tiny_config(
        tiny_corpus,
        tmp_path / "run",
        annealing={"schedule": "constant", "beta": 0.0},
        train={"epochs": 3, "best_metric": metric},
    )
    train(config, progress=False)
    valid = [r for r in _metrics(tmp_path / "run") if r["split"] == "valid"]
    best_epoch = min(valid, key=lambda r: r[metric])["epoch"]
    best = torch.load(tmp_path / "run" / "checkpoints" / "best.pt", weights_only=True)
    assert best["epoch"] == best_epoch  # the checkpoint records the next epoch to run
    assert best["best_valid"] == pytest.approx(min(r[metric] for r in valid), rel=1e-5)


def test_sentencepiece_run_trains_saves_its_model_and_decodes(tiny_corpus, tmp_path):
    config = tiny_config(
        tiny_corpus, tmp_path / "run", tokenizer={"kind": "sentencepiece", "vocab_size": 90, "model_type": "bpe"},
        train={"epochs": 1},
    )
    result = train(config, progress=False)
    assert (tmp_path / "run" / "tokenizer.model").is_file()
    run = load_run(tmp_path / "run", device="cpu")
    assert run.tokenizer.vocab_size == 90
    assert result.data["valid"]["tokens_with_eos"] == result.valid["tokens"]
    assert all(isinstance(sentence, str) for sentence in run.sample(2))
    # Per-word perplexity: the same total NLL over words + EOS of the (untruncated) sentences.
    metrics = run.evaluate("valid", iw_samples=3, prior_samples=0)
    sentences = tiny_corpus["valid"].read_text().splitlines()
    words = sum(len(sentence.split()) + 1 for sentence in sentences)
    assert metrics["words"] == words != metrics["tokens"]
    total_elbo = metrics["elbo"] * metrics["sentences"]
    assert metrics["ppl_elbo_per_word"] == pytest.approx(math.exp(total_elbo / words))
    assert metrics["ppl_elbo"] == pytest.approx(math.exp(total_elbo / metrics["tokens"]))
    assert metrics["ppl_iw_per_word"] == pytest.approx(math.exp(metrics["nll_iw"] * metrics["sentences"] / words))


def test_a_time_budget_stops_training_validates_and_keeps_best(tiny_corpus, tmp_path):
    messages = []
    config = tiny_config(tiny_corpus, tmp_path / "run", train={"epochs": 50, "max_minutes": 0.002, "validation": "elbo"})
    result = train(config, progress=False, echo=messages.append)
    assert 0 < result.step < 50 * 19 and not result.finished
    valid = [r for r in _metrics(tmp_path / "run") if r["split"] == "valid"]
    assert valid[-1]["step"] == result.step and len({r["step"] for r in valid}) == len(valid)
    # best.pt holds the best validation, which need not be the one taken when the budget ran out
    best = torch.load(tmp_path / "run" / "checkpoints" / "best.pt", weights_only=True)
    lowest = min(valid, key=lambda r: r["elbo"])
    assert best["best_valid"] == pytest.approx(lowest["elbo"], rel=1e-5) and best["step"] == lowest["step"]
    last = torch.load(tmp_path / "run" / "checkpoints" / "last.pt", weights_only=True)
    assert last["step"] == result.step and last["train_seconds"] >= 0.12
    assert "stopped at train.max_minutes=0.002" in messages[-1]
    # a larger budget continues the run where it stopped
    budget = last["train_seconds"] / 60 + 0.005
    more = tiny_config(tiny_corpus, tmp_path / "run", train={"epochs": 50, "max_minutes": budget, "validation": "elbo"})
    assert train(more, resume=True, progress=False).step > result.step


def test_adaptive_sentencepiece_run_trains_evaluates_and_decodes(tiny_corpus, tmp_path):
    config = tiny_config(
        tiny_corpus, tmp_path / "run", tokenizer={"kind": "sentencepiece", "vocab_size": 90, "model_type": "bpe"},
        model={"output_layer": "adaptive", "adaptive_cutoffs": [30, 60], "tie_embeddings": True}, train={"epochs": 1},
    )
    train(config, progress=False)
    run = load_run(tmp_path / "run", device="cpu")
    assert type(run.model.decoder.output).__name__ == "AdaptiveOutput"
    metrics = run.evaluate("valid", iw_samples=3, prior_samples=4)
    assert metrics["nll_iw"] <= metrics["elbo"] + 1e-4 and math.isfinite(metrics["mi"])
    assert all(isinstance(sentence, str) for sentence in run.sample(3, decoding=Decoding("beam")))


def test_cuda_request_is_an_error_without_a_gpu_and_works_with_one(tiny_corpus, tmp_path):
    from seqvae.training import resolve_device

    if torch.cuda.is_available():
        assert resolve_device("cuda").type == "cuda"
    else:
        with pytest.raises(SeqVAEError, match="run.device=cuda: CUDA is not available"):
            resolve_device("cuda")
    assert resolve_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")


def test_evaluate_reports_every_measure_consistently(tiny_corpus, tmp_path):
    train(tiny_config(tiny_corpus, tmp_path / "run", train={"epochs": 2}), progress=False)
    run = load_run(tmp_path / "run", device="cpu")
    metrics = run.evaluate("valid", iw_samples=50)
    assert metrics["nll_iw"] <= metrics["elbo"]  # the importance-weighted bound is the tighter one
    assert metrics["ppl_iw"] <= metrics["ppl_elbo"]
    assert sum(metrics["kl_per_dimension"]) == pytest.approx(metrics["kl"], abs=1e-3 * len(metrics["kl_per_dimension"]))
    assert 0 <= metrics["active_units"] <= 4 and metrics["mi"] <= math.log(60) + 0.1
    assert metrics["free_running_gap"] == pytest.approx(metrics["nll_free_running"] - metrics["nll_teacher_forced"])
    assert 0.0 <= metrics["bleu"] <= 100.0
    skipped = run.evaluate("valid", iw_samples=0, mi_group_size=8)
    assert "nll_iw" not in skipped and skipped["mi_aggregate"] == "groups of 8"
    assert skipped["rec"] == pytest.approx(metrics["rec"])  # the same seed draws the same z
    assert "ppl_elbo_per_word" not in metrics  # word tokens are words: no second perplexity
    # the latent probe, from the labels beside valid.txt: every attribute, accuracy and chance rate
    assert set(metrics["probe_accuracy"]) == set(ATTRIBUTES) == set(metrics["probe_majority"])
    assert all(0.0 <= value <= 1.0 for value in metrics["probe_accuracy"].values())
    assert metrics["probe_accuracy"]["number"] > metrics["probe_majority"]["number"]


def test_evaluate_refuses_labels_that_do_not_match_the_sentences(tiny_corpus, tmp_path):
    import shutil

    corpus = {split: tmp_path / "corpus" / path.name for split, path in tiny_corpus.items()}
    (tmp_path / "corpus").mkdir()
    for split, path in tiny_corpus.items():
        shutil.copy(path, corpus[split])
        shutil.copy(labels_path(path), labels_path(corpus[split]))
    train(tiny_config(corpus, tmp_path / "run", train={"epochs": 1}), progress=False)
    labels = labels_path(corpus["valid"])
    labels.write_text("".join(labels.read_text().splitlines(keepends=True)[:-1]))
    run = load_run(tmp_path / "run", device="cpu")
    with pytest.raises(SeqVAEError, match=r"valid\.labels\.jsonl: 59 labels for 60 sentences"):
        run.evaluate("valid", iw_samples=0, prior_samples=0)
    labels.write_text("not json\n")
    with pytest.raises(SeqVAEError, match=r"valid\.labels\.jsonl: not a labels file"):
        run.evaluate("valid", iw_samples=0, prior_samples=0)
    labels.unlink()
    assert "probe_accuracy" not in run.evaluate("valid", iw_samples=0, prior_samples=0)


def test_training_warns_of_posterior_collapse_and_stores_the_warning(tiny_corpus, tmp_path):
    messages = []
    # an inputful decoder with a heavy KL weight from the first step collapses the posterior
    config = tiny_config(
        tiny_corpus, tmp_path / "run", annealing={"schedule": "constant", "beta": 5.0},
        objective={"word_dropout": 0.0}, train={"epochs": 3},
    )
    train(config, progress=False, echo=messages.append)
    last = [r for r in _metrics(tmp_path / "run") if r["split"] == "valid"][-1]
    assert last["kl"] < 0.1 and last["active_units"] == 0
    assert last["warnings"] and last["warnings"][0].startswith("posterior collapse")
    assert any(message.startswith("WARNING (epoch 3): posterior collapse") for message in messages)


def test_healthy_training_stores_no_warning(tiny_corpus, tmp_path):
    # the inputless decoder (word dropout 1) can only reconstruct through z, so z is used
    config = tiny_config(
        tiny_corpus, tmp_path / "run", annealing={"schedule": "constant", "beta": 0.1},
        objective={"word_dropout": 1.0}, train={"epochs": 3},
    )
    train(config, progress=False)
    last = [r for r in _metrics(tmp_path / "run") if r["split"] == "valid"][-1]
    assert last["kl"] > 0.5 and last["mean_posterior_std"] > 0.01 and last["warnings"] == []


def test_each_epoch_validation_records_the_full_suite_or_only_the_elbo_terms(tiny_corpus, tmp_path):
    train(tiny_config(tiny_corpus, tmp_path / "full", train={"epochs": 1, "validation_iw_samples": 4}), progress=False)
    (full,) = [r for r in _metrics(tmp_path / "full") if r["split"] == "valid"]
    for key in ("nll_iw", "ppl_iw", "mi", "active_units", "nll_teacher_forced", "nll_free_running",
                "nll_inputless", "bleu", "kl_per_dimension", "prior_distinct_2", "prior_self_bleu", "warnings"):
        assert key in full, key
    assert full["iw_samples"] == 4 and full["nll_iw"] <= full["elbo"] + 1e-3
    train(tiny_config(tiny_corpus, tmp_path / "elbo", train={"epochs": 1, "validation": "elbo"}), progress=False)
    (cheap,) = [r for r in _metrics(tmp_path / "elbo") if r["split"] == "valid"]
    assert {"rec", "kl", "elbo", "active_units", "warnings"} <= set(cheap) and "nll_iw" not in cheap


def test_reconstruction_bleu_does_not_depend_on_the_evaluation_batch_size(tiny_corpus, tmp_path):
    train(tiny_config(tiny_corpus, tmp_path / "run", train={"epochs": 1, "max_steps": 3}), progress=False)
    run = load_run(tmp_path / "run", device="cpu")
    bleus = {size: run.evaluate("valid", batch_size=size, iw_samples=0, prior_samples=0)["bleu"] for size in (4, 60)}
    assert bleus[4] == pytest.approx(bleus[60], abs=1e-9)


def test_per_word_perplexity_counts_the_words_of_the_text(tiny_corpus, tmp_path):
    files = dict(tiny_corpus)
    test = tmp_path / "test.txt"
    lines = tiny_corpus["test"].read_text().splitlines()[:20]
    lines[0] = lines[0].replace("the", "thé\u0416\u4e2d", 1)  # characters never seen in training
    test.write_text("\n".join(lines) + "\n")
    files["test"] = test
    config = tiny_config(files, tmp_path / "run", tokenizer={"kind": "sentencepiece", "vocab_size": 80, "character_coverage": 1.0}, train={"epochs": 1, "max_steps": 2})
    train(config, progress=False)
    metrics = load_run(tmp_path / "run", device="cpu").evaluate("test", iw_samples=2, prior_samples=0)
    assert metrics["words"] == sum(len(line.split()) + 1 for line in lines)


def _scripted_validation(monkeypatch, values):
    """Make the validation figure that selects best.pt and drives the plateau rule follow ``values``
    (by epochs finished), so that stalls happen where the test says."""
    from seqvae.training.trainer import Trainer

    monkeypatch.setattr(Trainer, "selection_value", lambda self, valid: values[self.state.epoch])


def test_plateau_rule_decays_reloads_best_and_stops_after_the_set_number_of_decays(tiny_corpus, tmp_path, monkeypatch):
    _scripted_validation(monkeypatch, {1: 5.0, 2: 4.0, 3: 4.5, 4: 4.6, 5: 4.7, 6: 4.8, 7: 4.9, 8: 5.0})
    settings = {"epochs": 8, "learning_rate": 0.01, "lr_decay": "plateau", "lr_patience": 1, "lr_decay_reload_best": True, "stop_after_decays": 2}
    messages = []
    result = train(tiny_config(tiny_corpus, tmp_path / "run", train=settings), progress=False, echo=messages.append)
    # best at epoch 2; stalls at 3 and 4 decay the rate (patience 1), stalls at 5 and 6 decay it again, then stop
    assert result.epoch == 6 and result.step == 6 * 19 and result.finished and result.train_seconds > 0
    last = torch.load(tmp_path / "run" / "checkpoints" / "last.pt", weights_only=True)
    assert last["lr_decays"] == 2 and last["optimizer"]["param_groups"][0]["lr"] == pytest.approx(0.0025)
    decays = [m for m in messages if "learning rate" in m]
    assert len(decays) == 2 and all("back to best.pt (epoch 2)" in m for m in decays)
    assert "stopped after 2 learning-rate decays" in messages[-1]
    # the last decay went back to best.pt: the weights saved after it are epoch 2's; without the
    # reload they are epoch 6's
    assert all(torch.equal(value, _weights(tmp_path / "run", "best")[key]) for key, value in last["model"].items())
    plain = tiny_config(tiny_corpus, tmp_path / "plain", train={**settings, "lr_decay_reload_best": False})
    train(plain, progress=False)
    assert any(not torch.equal(value, _weights(tmp_path / "plain", "best")[key]) for key, value in _weights(tmp_path / "plain").items())
    # resuming a finished run trains nothing more
    again = train(tiny_config(tiny_corpus, tmp_path / "run", train=settings), resume=True, progress=False, echo=messages.append)
    assert again.step == result.step and "already stopped after 2 learning-rate decays" in messages[-1]


def test_plateau_rule_ignores_stalls_before_its_start_epoch(tiny_corpus, tmp_path, monkeypatch):
    _scripted_validation(monkeypatch, {1: 5.0, 2: 6.0, 3: 7.0, 4: 4.0, 5: 4.5})
    settings = {"epochs": 5, "lr_decay": "plateau", "lr_patience": 0, "lr_decay_start": 3}
    train(tiny_config(tiny_corpus, tmp_path / "run", train=settings), progress=False)
    last = torch.load(tmp_path / "run" / "checkpoints" / "last.pt", weights_only=True)
    # epochs 2 and 3 got worse but came before the start; epoch 4 set the scheduler's best and 5 stalled once
    assert last["lr_decays"] == 1 and last["optimizer"]["param_groups"][0]["lr"] == pytest.approx(5e-4)


def test_resume_across_a_decay_with_reload_equals_an_uninterrupted_run(tiny_corpus, tmp_path, monkeypatch):
    _scripted_validation(monkeypatch, {1: 5.0, 2: 4.0, 3: 4.5, 4: 4.6})
    settings = {"epochs": 4, "lr_decay": "plateau", "lr_patience": 0, "lr_decay_reload_best": True, "checkpoint_every": 5}
    train(tiny_config(tiny_corpus, tmp_path / "whole", train=settings), progress=False)
    train(tiny_config(tiny_corpus, tmp_path / "parts", train={**settings, "max_steps": 64}), progress=False)  # mid epoch 4
    train(tiny_config(tiny_corpus, tmp_path / "parts", train=settings), resume=True, progress=False)
    for key, value in _weights(tmp_path / "whole").items():
        assert torch.equal(value, _weights(tmp_path / "parts")[key]), key
    assert _without_stops(tmp_path / "whole") == _without_stops(tmp_path / "parts")


def test_sgd_optimizer_takes_plain_gradient_steps(tiny_corpus, tmp_path):
    from seqvae.training import build_optimizer

    parameter = torch.nn.Parameter(torch.tensor([1.0, -2.0]))
    optimizer = build_optimizer([parameter], learning_rate=0.5, device=torch.device("cpu"), kind="sgd")
    (parameter**2).sum().backward()
    optimizer.step()
    assert torch.equal(parameter.detach(), torch.tensor([1.0 - 0.5 * 2.0, -2.0 + 0.5 * 4.0]))
    config = tiny_config(tiny_corpus, tmp_path / "run", train={"optimizer": "sgd", "learning_rate": 1.0, "max_steps": 5})
    train(config, progress=False)
    state = torch.load(tmp_path / "run" / "checkpoints" / "last.pt", weights_only=True)["optimizer"]
    assert state["param_groups"][0]["momentum"] == 0 and not any("exp_avg" in entry for entry in state["state"].values())


def test_an_autoencoders_near_deterministic_codes_are_a_note_not_a_warning(tiny_corpus, tmp_path, monkeypatch):
    """beta = 0 leaves nothing to keep the posteriors wide: the overload diagnosis is expected and
    said so; a VAE's is a warning. The diagnosis's threshold is raised so that a tiny run meets it."""
    from seqvae.measures import diagnose
    from seqvae.training import validation

    monkeypatch.setattr(validation, "diagnose", lambda **figures: diagnose(**figures, overload_std=10.0))
    messages = {}
    for name, annealing in (("ae", {"schedule": "constant", "beta": 0.0}), ("vae", {})):
        messages[name] = []
        config = tiny_config(tiny_corpus, tmp_path / name, annealing=annealing, train={"epochs": 2, "validation": "elbo"})
        train(config, progress=False, echo=messages[name].append)
    notes = [m for m in messages["ae"] if "information overload" in m]
    assert len(notes) == 1 and notes[0].startswith("note (epoch 1): information overload")  # said once, not every epoch
    assert "expected of an autoencoder" in notes[0] and "not repeated" in notes[0]
    assert not any(m.startswith("WARNING") for m in messages["ae"])
    assert any(m.startswith("WARNING (epoch 1): information overload") for m in messages["vae"])
    assert all(record["warnings"] for record in _metrics(tmp_path / "ae") if record["split"] == "valid")  # kept as it is, each time

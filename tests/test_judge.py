"""Generated text judged by an independent language model (seqvae.judge): forward perplexity,
reverse perplexity and path fluency, on constructed cases."""

from __future__ import annotations

import math

import pytest
import torch

from conftest import tiny_config
from seqvae.attributes import judge_edits, transfer
from seqvae.cli import main
from seqvae.errors import SeqVAEError
from seqvae.judge import forward_perplexity, load_judge, reverse_perplexity, sentence_scores
from seqvae.runs import load_run
from seqvae.training import train

LANGUAGE_MODEL = {"model": {"latent_dim": 0}, "objective": {"word_dropout": 0.0}}


@pytest.fixture(scope="module")
def judge_dir(tiny_corpus, tmp_path_factory):
    """A language model of the tiny corpus, trained 10 epochs."""
    run_dir = tmp_path_factory.mktemp("judge") / "lm"
    train(tiny_config(tiny_corpus, run_dir, train={"epochs": 10, "validation": "elbo"}, **LANGUAGE_MODEL), progress=False)
    return run_dir


def _uniform(judge):
    """The judge with its output layer zeroed: p(w) = 1/V for every token in every context."""
    with torch.no_grad():
        judge.model.decoder.output.weight.zero_()
        judge.model.decoder.output.bias.zero_()
    return judge


def test_a_uniform_judge_gives_the_vocabulary_size_and_counts_each_end(judge_dir):
    judge = _uniform(load_judge(judge_dir, device="cpu"))
    sentences = ["the chef cooked a tasty soup .", "", "a a a a a a a a a a a a a a a", "zzz-unknown words here"]
    nll, tokens = sentence_scores(judge, sentences)
    vocabulary = judge.tokenizer.vocab_size
    assert tokens.tolist() == [8, 1, 16, 4]  # words + the end; an empty decode is its end alone
    torch.testing.assert_close(nll, tokens * math.log(vocabulary), rtol=1e-6, atol=1e-6)
    assert forward_perplexity(judge, sentences) == pytest.approx(vocabulary, rel=1e-6)


def test_forward_perplexity_equals_the_judges_own_evaluation_of_the_same_sentences(judge_dir, tiny_corpus):
    """The independent reference: the exact perplexity evaluate() reports for the test split, from
    its own batches in its own order (float32 sums over other batches: equal to 1e-6)."""
    judge = load_judge(judge_dir, device="cpu")
    test = tiny_corpus["test"].read_text(encoding="utf-8").splitlines()
    assert forward_perplexity(judge, test) == pytest.approx(judge.evaluate("test")["ppl"], rel=1e-6)
    scrambled = [" ".join(reversed(sentence.split())) for sentence in test]  # the same words, out of order
    assert forward_perplexity(judge, scrambled) > 1.5 * forward_perplexity(judge, test)


def test_reverse_perplexity_rewards_samples_that_cover_the_corpus(judge_dir, tiny_corpus, tmp_path):
    """An LM trained on the real training sentences reads the real test set far better than one
    trained on as many copies of one sentence (fluent, but no coverage)."""
    EPOCHS = 10
    judge = load_judge(judge_dir, device="cpu")
    real = tiny_corpus["train"].read_text(encoding="utf-8").splitlines()
    covering = reverse_perplexity(judge, real, tiny_corpus["test"], epochs=EPOCHS, work_dir=tmp_path / "covering")
    narrow = reverse_perplexity(judge, [real[0]] * len(real), tiny_corpus["test"], epochs=EPOCHS, work_dir=tmp_path / "narrow")
    assert covering["reverse_samples"] == len(real) and covering["reverse_epochs"] == EPOCHS
    assert narrow["reverse_ppl"] > 3 * covering["reverse_ppl"]
    # the reverse LM shares the judge's vocabulary, so the two figures are over the same tokens
    assert (tmp_path / "covering" / "reverse-lm" / "tokenizer.json").read_text() == (judge_dir / "tokenizer.json").read_text()
    with pytest.raises(SeqVAEError, match="at least 20 non-empty"):
        reverse_perplexity(judge, ["", "a b ."] * 5, tiny_corpus["test"])


def test_eval_with_a_judge_reports_every_judged_figure(judge_dir, tiny_corpus, tmp_path, capsys):
    train(tiny_config(tiny_corpus, tmp_path / "vae", train={"epochs": 2, "validation": "elbo"}, prior={"fit": True, "components": (1,)}), progress=False)
    run = load_run(tmp_path / "vae", device="cpu")
    judge = load_judge(judge_dir, device="cpu")
    options = {"samples": 30, "reverse_samples": 40, "reverse_epochs": 1}
    metrics = run.evaluate("valid", iw_samples=2, prior_samples=0, judge=judge, judge_options=options)
    for prefix in ("prior", "fitted_prior"):
        assert metrics[f"{prefix}_lm_forward_ppl"] > 1 and metrics[f"{prefix}_lm_reverse_ppl"] > 1
    assert metrics["lm_real_ppl"] == pytest.approx(judge.evaluate("valid")["ppl"], rel=1e-6)
    assert metrics["homotopy_path_lm_forward_ppl"] > 1 and metrics["homotopy_endpoint_lm_forward_ppl"] > 1
    assert metrics["lm_samples"] == 30 and metrics["lm_reverse_samples"] == 40
    capsys.readouterr()
    common = ["eval", str(tmp_path / "vae"), "--split", "valid", "--iw-samples", "2", "--prior-samples", "0"]
    assert main([*common, "--lm", str(judge_dir), "--lm-samples", "20", "--reverse-samples", "0"]) == 0
    out = capsys.readouterr().out
    assert "prior_lm_forward_ppl" in out and "lm_real_ppl" in out and "reverse_ppl" not in out
    assert main([*common, "--lm", str(tmp_path / "vae")]) == 2  # a VAE is no judge
    assert capsys.readouterr().err.strip().endswith("--lm needs a language model run (model.latent_dim = 0) trained on the same corpus; this run has z")
    assert main([*common, "--lm", str(judge_dir), "--reverse-samples", "5"]) == 2
    assert "--reverse-samples 5" in capsys.readouterr().err
    # edits: the judge's forward perplexity of the inputs, the unchanged decodes and each scale's,
    # each equal to forward_perplexity of those sentences
    edit = judge_edits(transfer(run, "tense", "future", scales=(1.0, 2.0), limit=20), judge)
    assert edit.inputs_lm_forward_ppl == pytest.approx(forward_perplexity(judge, edit.originals))
    assert edit.baseline_lm_forward_ppl == pytest.approx(forward_perplexity(judge, edit.unchanged))
    assert edit.lm_forward_ppl[2.0] == pytest.approx(forward_perplexity(judge, edit.outputs[2.0]))
    assert main(["attribute", str(tmp_path / "vae"), "--attribute", "tense=future", "--limit", "20", "--scale", "1", "2",
                 "--show", "0", "--lm", str(judge_dir)]) == 0
    judged = [line for line in capsys.readouterr().out.splitlines() if line.startswith("the judge's forward perplexity")]
    assert judged == [f"the judge's forward perplexity: inputs {edit.inputs_lm_forward_ppl:.2f}; unchanged codes "
                      f"{edit.baseline_lm_forward_ppl:.2f}; scale 1 {edit.lm_forward_ppl[1.0]:.2f}; scale 2 {edit.lm_forward_ppl[2.0]:.2f}"]


def test_a_run_takes_its_tokenizer_from_another_run_or_names_the_missing_file(judge_dir, tiny_corpus, tmp_path):
    """tokenizer.from_run: the vocabulary of judge_dir, not one built from this run's own (smaller)
    training split; a run directory without a tokenizer is named, and nothing is created."""
    small = tmp_path / "small.txt"
    small.write_text("the coach won the game .\n" * 20, encoding="utf-8")
    corpus = {**tiny_corpus, "train": small}
    config = tiny_config(corpus, tmp_path / "shared", train={"epochs": 1, "validation": "elbo"}, tokenizer={"from_run": str(judge_dir)}, **LANGUAGE_MODEL)
    train(config, progress=False)
    assert (tmp_path / "shared" / "tokenizer.json").read_text() == (judge_dir / "tokenizer.json").read_text()
    missing = tiny_config(corpus, tmp_path / "other", tokenizer={"from_run": str(tmp_path / "nowhere")})
    with pytest.raises(SeqVAEError, match=r"nowhere/tokenizer.json: tokenizer file not found"):
        train(missing, progress=False)
    assert not (tmp_path / "other").exists()

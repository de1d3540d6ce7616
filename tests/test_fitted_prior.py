"""The ex-post prior (seqvae.fitted_prior): densities against torch.distributions, EM on data
from a known mixture, the IW bound under a second prior, and the run commands that use it."""

import json

import pytest
import torch
from torch.distributions import Categorical, MixtureSameFamily, MultivariateNormal

from seqvae.cli import main
from seqvae.errors import SeqVAEError
from seqvae.evaluation.split import spread_sample
from seqvae.fitted_prior import GaussianMixture, StandardNormal, choose_mixture, fit_gaussian_mixture
from seqvae.measures import distinct_n, self_bleu
from seqvae.runs import load_run
from seqvae.training import train

from conftest import tiny_config


def _known_mixture() -> GaussianMixture:
    generator = torch.Generator().manual_seed(0)
    means = torch.randn(3, 4, generator=generator, dtype=torch.float64) * 4
    factors = torch.randn(3, 4, 4, generator=generator, dtype=torch.float64) * 0.5
    covariances = factors @ factors.transpose(1, 2) + 0.2 * torch.eye(4, dtype=torch.float64)
    weights = torch.tensor([0.5, 0.3, 0.2], dtype=torch.float64)
    return GaussianMixture(weights, means, torch.linalg.cholesky(covariances), "full")


def _reference(mixture: GaussianMixture) -> MixtureSameFamily:
    scale = torch.diag_embed(mixture.scale) if mixture.covariance == "diagonal" else mixture.scale
    return MixtureSameFamily(Categorical(mixture.weights), MultivariateNormal(mixture.means, scale_tril=scale))


def test_log_density_equals_torch_distributions_for_both_covariances():
    full = _known_mixture()
    diagonal = GaussianMixture(full.weights, full.means, torch.rand(3, 4, dtype=torch.float64) + 0.3, "diagonal")
    z = torch.randn(7, 5, 4, dtype=torch.float64) * 3
    for mixture in (full, diagonal):
        torch.testing.assert_close(mixture.log_prob(z), _reference(mixture).log_prob(z), rtol=0, atol=1e-10)
    standard = StandardNormal(4)
    reference = MultivariateNormal(torch.zeros(4, dtype=torch.float64), torch.eye(4, dtype=torch.float64))
    torch.testing.assert_close(standard.log_prob(z), reference.log_prob(z), rtol=0, atol=1e-10)


def test_a_tempered_prior_is_the_same_family_with_covariances_times_t_squared():
    full = _known_mixture()
    diagonal = GaussianMixture(full.weights, full.means, torch.rand(3, 4, dtype=torch.float64) + 0.3, "diagonal")
    z = torch.randn(7, 5, 4, dtype=torch.float64) * 3
    for mixture in (full, diagonal):
        covariances = mixture.scale.pow(2).diag_embed() if mixture.covariance == "diagonal" else mixture.scale @ mixture.scale.mT
        reference = MixtureSameFamily(Categorical(mixture.weights), MultivariateNormal(mixture.means, 0.49 * covariances))
        tempered = mixture.tempered(0.7)
        torch.testing.assert_close(tempered.log_prob(z), reference.log_prob(z), rtol=0, atol=1e-9)
        assert tempered.fit["temperature"] == 0.7 and mixture.tempered(1.0) is mixture
    reference = MultivariateNormal(torch.zeros(4, dtype=torch.float64), 0.25 * torch.eye(4, dtype=torch.float64))
    torch.testing.assert_close(StandardNormal(4).tempered(0.5).log_prob(z), reference.log_prob(z), rtol=0, atol=1e-10)
    draws = StandardNormal(4).tempered(0.5).sample(20000, torch.Generator().manual_seed(0))
    assert abs(float(draws.std()) - 0.5) < 0.01
    for bad in (0.0, -1.0, float("nan"), float("inf")):
        with pytest.raises(SeqVAEError, match="must be a positive number"):
            full.tempered(bad)


def test_samples_follow_the_mixture():
    mixture = _known_mixture()
    draws = mixture.sample(200_000, torch.Generator().manual_seed(1)).double()
    weights, means = mixture.weights, mixture.means
    covariances = mixture.scale @ mixture.scale.transpose(1, 2)
    mean = weights @ means  # the mixture's moments: E z and Cov z = sum_k w_k (S_k + m_k m_k^T) - E z E z^T
    second = (weights.view(-1, 1, 1) * (covariances + means.unsqueeze(2) * means.unsqueeze(1))).sum(0)
    torch.testing.assert_close(draws.mean(0), mean, rtol=0, atol=0.05)
    torch.testing.assert_close(torch.cov(draws.T), second - torch.outer(mean, mean), rtol=0.02, atol=0.05)
    counts = torch.bincount(_reference(mixture).component_distribution.log_prob(draws.unsqueeze(1)).argmax(1), minlength=3)
    torch.testing.assert_close(counts.double() / len(draws), weights, rtol=0, atol=0.02)


def test_em_recovers_a_known_mixture_and_validation_chooses_enough_components():
    truth = _known_mixture()
    generator = torch.Generator().manual_seed(2)
    train_codes, valid_codes = truth.sample(6000, generator), truth.sample(2000, generator)
    fitted = fit_gaussian_mixture(train_codes, 3, "full")
    true_valid = float(truth.log_prob(valid_codes.double()).mean())
    assert float(fitted.log_prob(valid_codes.double()).mean()) == pytest.approx(true_valid, abs=0.02)
    torch.testing.assert_close(fitted.weights.sort().values, truth.weights.sort().values, rtol=0, atol=0.02)
    chosen = choose_mixture(train_codes, valid_codes, components=(1, 2, 4), covariances=("diagonal", "full"))
    assert chosen.covariance == "full" and chosen.components == 4  # 4 full components nest the 3 true ones
    candidates = {(c["components"], c["covariance"]): c["valid_log_likelihood"] for c in chosen.fit["candidates"]}
    assert candidates[(1, "full")] < candidates[(2, "full")] < candidates[(4, "full")] + 0.01
    assert chosen.fit["standard_normal_valid_log_likelihood"] < candidates[(1, "diagonal")]
    assert chosen.fit["valid_log_likelihood"] == max(candidates.values()) == candidates[(4, "full")]
    assert GaussianMixture.from_dict(json.loads(json.dumps(chosen.to_dict()))).log_prob(valid_codes).equal(chosen.log_prob(valid_codes))


def test_the_iw_bound_under_n01_written_as_a_mixture_equals_the_standard_one():
    from seqvae.config import ModelConfig
    from seqvae.data.batching import collate
    from seqvae.measures import importance_weighted_log_likelihood, importance_weighted_log_likelihoods, standard_normal_log_prob
    from seqvae.models.vae import build_model

    torch.manual_seed(0)
    model = build_model(ModelConfig(embedding_dim=8, hidden_dim=8, latent_dim=3), vocab_size=12).eval()
    batch = collate([[4, 5, 6], [7, 8], [9, 10, 11, 4]])
    standard_as_mixture = GaussianMixture(torch.ones(1, dtype=torch.float64), torch.zeros(1, 3, dtype=torch.float64), torch.ones(1, 3, dtype=torch.float64), "diagonal")
    alone = importance_weighted_log_likelihood(model, batch, num_samples=20, generator=torch.Generator().manual_seed(3))
    both = importance_weighted_log_likelihoods(model, batch, (standard_normal_log_prob, standard_as_mixture.log_prob), num_samples=20, generator=torch.Generator().manual_seed(3))
    assert torch.equal(both[0], alone)  # the same draws and decoder scores: bit for bit
    torch.testing.assert_close(both[1], alone, rtol=0, atol=1e-5)


def test_a_finished_run_fits_its_prior_and_every_command_draws_from_it(tiny_corpus, tmp_path, capsys):
    config = tiny_config(tiny_corpus, tmp_path / "run", prior={"fit": True, "components": (1, 2)}, train={"validation": "elbo"})
    train(config, progress=False)
    saved = json.loads((tmp_path / "run" / "prior.json").read_text())
    assert saved["fit"]["checkpoint"]["file"] == "best.pt" and saved["fit"]["codes"] == "sample"
    assert len(saved["fit"]["candidates"]) == 4  # 1 and 2 components, diagonal and full
    run = load_run(tmp_path / "run", device="cpu")
    standard, fitted = run.prior(500, seed=0), run.prior(500, seed=0, prior="fitted")
    assert torch.equal(standard, run.prior(500, seed=0, prior="standard"))  # N(0, I) draws as before
    assert not torch.allclose(standard.mean(0), fitted.mean(0), atol=0.05)
    assert len(run.sample(2, prior="fitted")) == 2
    metrics = run.evaluate("valid", iw_samples=5, prior_samples=4)
    assert metrics["nll_iw_fitted"] > 0 and metrics["fitted_prior"].endswith("covariance") and "fitted_prior_self_bleu" in metrics
    assert "nll_iw_fitted" not in run.evaluate("valid", iw_samples=5, prior_samples=0, fitted_prior=False)
    assert 0 <= metrics["homotopy_endpoint_bleu"] <= 100 and 0 <= metrics["homotopy_falling_share"] <= 1
    assert metrics["homotopy_pairs"] == 50 and metrics["homotopy_steps"] == 7
    # the reference for the prior samples' figures: as many real sentences, whatever their batches' order
    valid = [run.tokenizer.decode(run.tokenizer.encode(line)) for line in tiny_corpus["valid"].read_text().splitlines()]
    assert spread_sample(valid, 4) == spread_sample(list(reversed(valid)), 4) and len(set(spread_sample(valid, 4))) == 4
    assert metrics["real_self_bleu"] == pytest.approx(self_bleu(spread_sample(valid, 4)))
    assert metrics["real_distinct_1"] == pytest.approx(distinct_n(spread_sample(valid, 4), 1))

    # a colder fitted prior: the same family narrowed, for its bound and its samples
    cold = run.evaluate("valid", iw_samples=5, prior_samples=4, homotopy_pairs=0, prior_temperature=0.5)
    assert cold["fitted_prior"].endswith("covariance, temperature 0.5") and cold["fitted_prior_temperature"] == 0.5
    assert cold["nll_iw"] == pytest.approx(metrics["nll_iw"]) and cold["nll_iw_fitted"] != pytest.approx(metrics["nll_iw_fitted"])
    narrow = run.prior(2000, seed=0, prior="fitted", temperature=0.5)
    assert float(narrow.std(0).mean()) < 0.75 * float(fitted.std(0).mean())

    run_dir = str(tmp_path / "run")
    assert main(["sample", run_dir, "-n", "2", "--prior", "fitted"]) == 0
    assert main(["sample", run_dir, "-n", "2", "--prior", "fitted", "--prior-temperature", "0.5"]) == 0
    assert main(["sample", run_dir, "--prior-temperature", "0"]) == 2
    assert "--prior-temperature 0.0: must be a positive number" in capsys.readouterr().err
    assert main(["eval", run_dir, "--prior-temperature", "-1"]) == 2
    assert "--prior-temperature -1.0: must be a positive number" in capsys.readouterr().err
    assert main(["interpolate", run_dir, "--prior", "fitted", "--steps", "3"]) == 0
    assert main(["interpolate", run_dir, "--prior", "--steps", "3"]) == 0  # the config's default: N(0, I)
    capsys.readouterr()
    assert main(["prior", run_dir, "--components", "1", "--covariance", "diagonal", "--codes", "mean"]) == 0
    out = capsys.readouterr().out
    assert "1 x diagonal" in out and "<- kept" in out and "N(0, I)" in out
    # the run report shows samples from both priors
    assert main(["report", run_dir, "--output", str(tmp_path / "report"), "--samples", "2", "--steps", "3"]) == 0
    summary = (tmp_path / "report" / "report.md").read_text()
    assert "Greedy decodes of z ~ N(0, I), seed 0:" in summary
    assert "Greedy decodes of z from the fitted prior (1 x diagonal Gaussian mixture), seed 0:" in summary
    assert sum(line[:3] in ("1. ", "2. ", "3. ") for line in summary.splitlines()) == 4
    # a prior fitted to another checkpoint is refused with the command that fits it again
    saved["fit"]["checkpoint"]["step"] = -1  # as if fitted before the run went on
    (tmp_path / "run" / "prior.json").write_text(json.dumps(saved))
    with pytest.raises(SeqVAEError, match="fitted to best.pt at step -1, but best.pt is at step .*; fit it again with: seqvae prior "):
        load_run(tmp_path / "run", device="cpu").prior(2, prior="fitted")
    assert main(["sample", run_dir, "--prior", "fitted"]) == 2 and "fit it again" in capsys.readouterr().err


def test_a_run_without_a_fitted_prior_says_how_to_fit_one(tiny_corpus, tmp_path, capsys):
    train(tiny_config(tiny_corpus, tmp_path / "run", train={"epochs": 1, "validation": "elbo"}), progress=False)
    assert not (tmp_path / "run" / "prior.json").exists()  # prior.fit = false
    assert main(["sample", str(tmp_path / "run"), "--prior", "fitted"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1] == f"seqvae: error: {tmp_path / 'run' / 'prior.json'}: no fitted prior; fit one with: seqvae prior {tmp_path / 'run'}"
    assert "nll_iw_fitted" not in load_run(tmp_path / "run", device="cpu").evaluate("valid", iw_samples=3, prior_samples=0)

"""Flow posteriors (IAF, planar): log-determinants against autograd, densities against quadrature
and sampling, the IW bound against numerical integration, the IAF inverse, MI, and training."""

import json
import math

import pytest
import torch

from seqvae.config import ModelConfig
from seqvae.data.batching import collate
from seqvae.errors import SeqVAEError
from seqvae.measures import importance_weighted_log_likelihood, mutual_information, standard_normal_log_prob
from seqvae.models.flows import InverseAutoregressiveFlow, PlanarFlow, build_flow
from seqvae.models.posterior import DiagonalGaussian, FlowPosterior
from seqvae.models.vae import build_model
from seqvae.runs import load_run
from seqvae.training import train

from conftest import tiny_config


def _flow(kind, latent, steps, context_dim=5, hidden=24, seed=0, scale=1.0):
    torch.manual_seed(seed)
    flow = build_flow(kind, latent_dim=latent, context_dim=context_dim, steps=steps, hidden_dim=hidden).double()
    with torch.no_grad():  # larger weights than at initialisation: a map far from the identity
        for name, parameter in flow.named_parameters():
            if "bias" not in name:
                parameter.mul_(scale)
    return flow


@pytest.mark.parametrize("kind", ["iaf", "planar"])
@pytest.mark.parametrize("latent", [4, 8])
@pytest.mark.parametrize("steps", [1, 3])
def test_log_determinant_equals_the_autograd_jacobian(kind, latent, steps):
    flow = _flow(kind, latent, steps, scale=2.0)
    context = torch.randn(1, 5, dtype=torch.float64)
    prepared = flow.prepare(context)
    for trial in range(3):
        z = torch.randn(latent, dtype=torch.float64, generator=torch.Generator().manual_seed(trial))
        jacobian = torch.autograd.functional.jacobian(lambda v: flow(v.unsqueeze(0), prepared)[0].squeeze(0), z)
        _, expected = torch.linalg.slogdet(jacobian)
        _, log_det = flow(z.unsqueeze(0), prepared)
        torch.testing.assert_close(log_det.squeeze(0), expected, rtol=1e-9, atol=1e-9)


def _planar_inverse(flow: PlanarFlow, y: torch.Tensor, prepared) -> tuple[torch.Tensor, torch.Tensor]:
    """An independent inverse for the test: each planar step solved by bisection on the scalar
    a = w.z (w.y = a + w.u_hat tanh(a + b) is increasing in a), then the forward log-det at z."""
    z = y
    for u_hat, w, b in reversed(prepared):
        target = (w * z).sum(-1)
        wu = (w * u_hat).sum(-1)
        low, high = target - wu.abs() - 1.0, target + wu.abs() + 1.0
        for _ in range(64):  # the bracket, at most tens wide, halved to below float64 resolution
            middle = (low + high) / 2
            above = middle + wu * torch.tanh(middle + b) > target
            high, low = torch.where(above, middle, high), torch.where(above, low, middle)
        z = z - u_hat * torch.tanh((low + high) / 2 + b).unsqueeze(-1)
    _, log_det = flow(z, prepared)
    return z, log_det


@pytest.mark.parametrize("kind", ["iaf", "planar"])
def test_flow_density_integrates_to_one_and_sampling_matches_it(kind):
    flow = _flow(kind, 2, 3, scale=1.5, seed=1)
    context = torch.randn(1, 5, dtype=torch.float64, generator=torch.Generator().manual_seed(3))
    base = DiagonalGaussian(mean=torch.tensor([[0.3, -0.2]], dtype=torch.float64), logvar=torch.tensor([[-0.4, 0.2]], dtype=torch.float64))
    posterior = FlowPosterior(base=base, context=context, flow=flow)
    edge, cells = 8.0, 400  # midpoint rule: cells of 0.04, an error far below the tolerance
    axis = torch.linspace(-edge, edge, cells + 1, dtype=torch.float64)
    centres = (axis[:-1] + axis[1:]) / 2
    grid = torch.cartesian_prod(centres, centres).unsqueeze(1)  # (G, 1, 2): points under the one sentence
    if kind == "iaf":
        log_density = posterior.log_prob(grid).squeeze(1)
    else:
        z0, log_det = _planar_inverse(flow, grid, posterior.prepared)
        log_density = (base.log_prob(z0) - log_det).squeeze(1)
    cell_area = (2 * edge / cells) ** 2
    mass = log_density.detach().exp() * cell_area
    assert float(mass.sum()) == pytest.approx(1.0, abs=0.01)
    # 200,000 samples against the density, in 20 x 20 bins over the square
    samples = FlowPosterior(base=DiagonalGaussian(base.mean.expand(200_000, 2), base.logvar.expand(200_000, 2)),
                            context=context.expand(200_000, 5), flow=flow).rsample(torch.Generator().manual_seed(0))
    bins = 20
    def histogram(points, weights=None):
        index = ((points + edge) / (2 * edge) * bins).long().clamp(0, bins - 1)
        return torch.zeros(bins * bins, dtype=torch.float64).index_add_(0, index[:, 0] * bins + index[:, 1], weights if weights is not None else torch.ones(len(points), dtype=torch.float64))
    sampled = histogram(samples.detach()) / 200_000
    expected = histogram(grid.squeeze(1), mass)
    assert 0.5 * float((sampled - expected).abs().sum()) < 0.02  # total variation distance


def _toy_flow_model(kind, steps=2):
    torch.manual_seed(0)
    config = ModelConfig(embedding_dim=6, hidden_dim=8, latent_dim=1, flow=kind, flow_steps=steps, flow_hidden=8)
    model = build_model(config, vocab_size=8).eval()
    with torch.no_grad():
        model.decoder.latent_to_state.weight.mul_(4.0)
        # a proposal wider than the true posterior keeps the importance weights' variance low
        model.posterior.projection.bias[1:] += 1.5
        for parameter in model.posterior.flow.parameters():  # a flow far from the identity
            parameter.mul_(2.0)
    return model


@pytest.mark.parametrize("kind", ["iaf", "planar"])
def test_iw_bound_with_a_flow_matches_numerical_integration_on_a_one_latent_model(kind):
    model = _toy_flow_model(kind)
    batch = collate([[4, 5], [6], [7, 4, 6]])
    grid = torch.linspace(-10.0, 10.0, 8001).unsqueeze(1)
    exact = []
    with torch.no_grad():
        for row in range(batch.num_sentences):
            nll = model.decoder.sequence_nll(
                batch.inputs[row : row + 1].expand(len(grid), -1), grid,
                batch.targets[row : row + 1].expand(len(grid), -1), batch.mask[row : row + 1].expand(len(grid), -1),
            )
            exact.append(torch.logsumexp(-nll + standard_normal_log_prob(grid), dim=0) + math.log(20.0 / 8000))
    exact = torch.stack(exact)
    with torch.no_grad():
        estimate = importance_weighted_log_likelihood(model, batch, num_samples=4000, chunk_size=500, generator=torch.Generator().manual_seed(0))
    assert torch.allclose(estimate, exact, rtol=0.01)
    # the flow is not the identity: its KL estimate differs from the base Gaussian's analytic KL
    posterior = model.encode(batch)
    _, kl = posterior.sample_kl(torch.Generator().manual_seed(0))
    assert not torch.allclose(kl, posterior.base.kl(), atol=0.05)


def test_zero_flow_steps_is_the_gaussian_posterior_exactly(tiny_corpus, tmp_path):
    gaussian = train(tiny_config(tiny_corpus, tmp_path / "gaussian", train={"epochs": 1}), progress=False)
    zero = train(tiny_config(tiny_corpus, tmp_path / "zero", model={"flow": "iaf", "flow_steps": 0}, train={"epochs": 1}), progress=False)
    assert zero.valid == gaussian.valid
    records = [(tmp_path / name / "metrics.jsonl").read_text() for name in ("gaussian", "zero")]
    assert records[0] == records[1]


def test_iaf_inverse_recovers_the_base_sample():
    torch.manual_seed(0)
    flow = InverseAutoregressiveFlow(latent_dim=32, context_dim=20, steps=3, hidden_dim=96)
    with torch.no_grad():
        for parameter in flow.parameters():
            parameter.mul_(2.0)
    context = torch.randn(50, 20)
    prepared = flow.prepare(context)
    z0 = torch.randn(50, 32)
    with torch.no_grad():
        z, log_det = flow(z0, prepared)
        recovered, inverse_log_det = flow.inverse(z, prepared)
    assert float((recovered - z0).abs().max()) < 1e-4
    torch.testing.assert_close(inverse_log_det, log_det, rtol=1e-4, atol=1e-4)
    assert float((z - z0).abs().max()) > 0.5  # not the identity


def test_mi_with_an_identity_iaf_equals_the_gaussian_mi():
    torch.manual_seed(0)
    flow = InverseAutoregressiveFlow(latent_dim=6, context_dim=4, steps=2, hidden_dim=12)
    with torch.no_grad():  # m = 0, sigma = sigmoid(30) = 1 in float32: the identity map
        for step in flow.steps:
            step.made.output.weight.zero_()
            step.made.output.bias.zero_()
            step.made.output.bias[6:] = 30.0
    base = DiagonalGaussian(mean=torch.randn(300, 6), logvar=torch.randn(300, 6) * 0.3 - 1.0)
    posterior = FlowPosterior(base=base, context=torch.randn(300, 4), flow=flow)
    for group in (None, 50):
        gaussian = mutual_information(base, group_size=group, generator=torch.Generator().manual_seed(1))
        with_flow = mutual_information(posterior, group_size=group, generator=torch.Generator().manual_seed(1))
        assert with_flow == pytest.approx(gaussian, abs=1e-5)
    # and a flow that is not the identity changes it
    other = FlowPosterior(base=base, context=torch.randn(300, 4), flow=InverseAutoregressiveFlow(latent_dim=6, context_dim=4, steps=2, hidden_dim=12))
    assert mutual_information(other, generator=torch.Generator().manual_seed(1)) != pytest.approx(gaussian, abs=1e-3)


def test_cross_log_prob_is_the_same_in_any_chunking(monkeypatch):
    import seqvae.models.posterior as posterior_module

    torch.manual_seed(0)
    flow = InverseAutoregressiveFlow(latent_dim=5, context_dim=4, steps=2, hidden_dim=10)
    posterior = FlowPosterior(base=DiagonalGaussian(torch.randn(40, 5), torch.randn(40, 5) * 0.2), context=torch.randn(40, 4), flow=flow)
    z = torch.randn(30, 5)
    whole = posterior.cross_log_prob(z)
    monkeypatch.setattr(posterior_module, "PAIRS_PER_CALL", 40 * 7)
    torch.testing.assert_close(posterior.cross_log_prob(z), whole)
    # each entry is log q(z_i | x_j) of sentence j alone
    single = posterior.select(slice(3, 4)).log_prob(z.unsqueeze(1)).squeeze(1)
    torch.testing.assert_close(whole[:, 3], single)


def test_per_dimension_free_bits_are_refused_with_a_flow(tiny_corpus, tmp_path):
    with pytest.raises(SeqVAEError, match="per_dimension has no meaning with a flow.*total_hinge"):
        tiny_config(tiny_corpus, tmp_path, model={"flow": "iaf"}, objective={"free_bits": "per_dimension", "free_bits_lambda": 0.1})
    tiny_config(tiny_corpus, tmp_path, model={"flow": "iaf"}, objective={"free_bits": "total_hinge", "free_bits_lambda": 1.0})


@pytest.mark.parametrize("kind", ["iaf", "planar"])
def test_a_flow_run_trains_resumes_evaluates_and_decodes(tiny_corpus, tmp_path, kind):
    settings = {"model": {"flow": kind, "flow_steps": 2, "flow_hidden": 16}, "train": {"epochs": 2, "checkpoint_every": 4, "log_every": 3}}
    train(tiny_config(tiny_corpus, tmp_path / "whole", **settings), progress=False)
    stopped = {**settings, "train": {**settings["train"], "max_steps": 26}}
    train(tiny_config(tiny_corpus, tmp_path / "parts", **stopped), progress=False)
    train(tiny_config(tiny_corpus, tmp_path / "parts", **settings), resume=True, progress=False)
    whole = torch.load(tmp_path / "whole" / "checkpoints" / "last.pt", weights_only=True)
    parts = torch.load(tmp_path / "parts" / "checkpoints" / "last.pt", weights_only=True)
    assert any(key.startswith("posterior.flow.") for key in whole["model"])
    for key, value in whole["model"].items():
        assert torch.equal(value, parts["model"][key]), key
    records = [json.loads(line) for line in (tmp_path / "whole" / "metrics.jsonl").read_text().splitlines()]
    assert all("kl_std" in r for r in records if r["split"] == "train")
    run = load_run(tmp_path / "whole", device="cpu")
    metrics = run.evaluate("test", iw_samples=10, prior_samples=4)
    assert "kl_base_per_dimension" in metrics and "flow posterior" in metrics["posterior"]
    if kind == "iaf":
        assert math.isfinite(metrics["mi"])
    else:
        assert "mi" not in metrics and metrics["absent"] == ["mi"] and "no tractable inverse" in metrics["absent_because"]
    # generation, interpolation and attribute vectors work on z unchanged
    assert len(run.sample(3, seed=0)) == 3
    assert len(run.interpolate("the cat sat .", "a dog ran .", steps=3)) == 3
    assert len(run.reconstruct(["the cat sat ."], sample_posterior=True)) == 1
    vector = run.attribute_vector(["the cat sat ."], ["a dog ran ."])
    assert len(run.apply_attribute(["the cat sat ."], vector)) == 1
    # the codes a user gets are plain tensors, so the report's latent map can plot them
    assert not run.encode(["the cat sat ."]).mean.requires_grad
    from seqvae.latent_map import plot_latent_map

    assert plot_latent_map(run, tiny_corpus["valid"].read_text().splitlines(), tmp_path / "map.png").is_file()


def test_codes_far_outside_a_sentence_flow_count_as_zero_density():
    torch.manual_seed(0)
    flow = InverseAutoregressiveFlow(latent_dim=4, context_dim=3, steps=2, hidden_dim=8)
    posterior = FlowPosterior(base=DiagonalGaussian(torch.zeros(5, 4), torch.zeros(5, 4)), context=torch.randn(5, 3), flow=flow)
    z = torch.cat([posterior.rsample(torch.Generator().manual_seed(0)), torch.full((3, 4), 1e6)])
    with torch.no_grad():  # the raw inverse of the far codes leaves the floating-point range
        z0, log_det = flow.inverse(z.unsqueeze(1), posterior.prepared)
        assert torch.isnan(posterior.base.log_prob(z0) - log_det)[5:].any()
    log_q = posterior.cross_log_prob(z)
    assert not torch.isnan(log_q).any() and not (log_q == float("inf")).any()
    assert (log_q[5:] == float("-inf")).any()
    assert torch.isfinite(log_q[:5]).all()  # the sentences' own samples keep finite densities


def test_a_planar_posterior_refuses_densities_at_arbitrary_codes():
    flow = PlanarFlow(latent_dim=3, context_dim=2, steps=2)
    posterior = FlowPosterior(base=DiagonalGaussian(torch.zeros(4, 3), torch.zeros(4, 3)), context=torch.randn(4, 2), flow=flow)
    assert not posterior.has_density
    for call in (lambda: posterior.log_prob(torch.zeros(4, 3)), lambda: posterior.cross_log_prob(torch.zeros(2, 3))):
        with pytest.raises(ValueError, match="no tractable inverse"):
            call()
    with pytest.raises(ValueError, match="no tractable density"):
        mutual_information(posterior)

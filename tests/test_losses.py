import math

import pytest
import torch
from torch.distributions import Normal, kl_divergence

from seqvae.losses import free_bits_per_dimension, free_bits_total_hinge, kl_penalty, sequence_nll
from seqvae.models.posterior import DiagonalGaussian


def test_kl_matches_torch_distributions_with_unequal_dimensions():
    generator = torch.Generator().manual_seed(0)
    mean = torch.randn(3, 5, generator=generator) * 2
    logvar = torch.randn(3, 5, generator=generator)
    posterior = DiagonalGaussian(mean=mean, logvar=logvar)
    reference = kl_divergence(Normal(mean, torch.exp(0.5 * logvar)), Normal(0.0, 1.0))
    torch.testing.assert_close(posterior.kl_per_dimension(), reference)
    torch.testing.assert_close(posterior.kl(), reference.sum(-1))


def test_kl_is_zero_when_posterior_equals_prior():
    posterior = DiagonalGaussian(mean=torch.zeros(2, 7), logvar=torch.zeros(2, 7))
    assert torch.count_nonzero(posterior.kl()) == 0


def test_log_prob_matches_torch_distributions():
    generator = torch.Generator().manual_seed(1)
    mean, logvar = torch.randn(4, 3, generator=generator), torch.randn(4, 3, generator=generator)
    z = torch.randn(6, 4, 3, generator=generator)
    posterior = DiagonalGaussian(mean=mean, logvar=logvar)
    reference = Normal(mean, torch.exp(0.5 * logvar)).log_prob(z).sum(-1)
    torch.testing.assert_close(posterior.log_prob(z), reference)


def test_sequence_nll_sums_real_tokens_only():
    generator = torch.Generator().manual_seed(2)
    logits = torch.randn(2, 4, 6, generator=generator)
    targets = torch.tensor([[1, 2, 3, 0], [4, 5, 0, 0]])
    mask = torch.tensor([[True, True, True, False], [True, True, False, False]])
    log_probs = torch.log_softmax(logits, dim=-1)
    expected = torch.tensor(
        [
            -sum(float(log_probs[b, t, targets[b, t]]) for t in range(4) if mask[b, t])
            for b in range(2)
        ]
    )
    torch.testing.assert_close(sequence_nll(logits, targets, mask), expected)


def test_free_bits_per_dimension_value_and_gradient():
    # batch means per dimension: 0.1, 0.5, 2.0 ; lambda = 0.25
    kl = torch.tensor([[0.0, 0.4, 1.0], [0.2, 0.6, 3.0]], requires_grad=True)
    value = free_bits_per_dimension(kl, 0.25)
    assert value.item() == pytest.approx(0.25 + 0.5 + 2.0)
    value.backward()
    # below the threshold the dimension is constant: zero gradient; above it, d mean / d KL = 1/B
    torch.testing.assert_close(kl.grad, torch.tensor([[0.0, 0.5, 0.5], [0.0, 0.5, 0.5]]))


def test_free_bits_per_dimension_uses_the_batch_mean_inside_the_max():
    # example 0 is under lambda in dimension 0, example 1 far over: the mean (1.05) is over
    kl = torch.tensor([[0.1], [2.0]], requires_grad=True)
    value = free_bits_per_dimension(kl, 0.5)
    assert value.item() == pytest.approx(1.05)
    value.backward()
    torch.testing.assert_close(kl.grad, torch.tensor([[0.5], [0.5]]))


def test_free_bits_per_example_masks_each_examples_dimensions_under_lambda():
    # Li et al. 2019's "fb=2": per example and dimension, KL_ij counts in full when over lambda, else not at all
    kl = torch.tensor([[0.1, 0.4, 0.25], [0.3, 0.2, 3.0]], requires_grad=True)
    value = kl_penalty(kl.sum(dim=1), variant="per_example", free_bits=0.25, kl_per_dimension=kl)
    assert value.item() == pytest.approx((0.4 + (0.3 + 3.0)) / 2)  # 0.25 itself is left out (at most lambda)
    value.backward()
    torch.testing.assert_close(kl.grad, torch.tensor([[0.0, 0.5, 0.0], [0.5, 0.0, 0.5]]))
    # where the batch mean is over lambda, per_dimension would count example 0's dimension 0; per_example does not
    other = torch.tensor([[0.1], [2.0]])
    assert kl_penalty(other.sum(1), variant="per_example", free_bits=0.5, kl_per_dimension=other).item() == pytest.approx(1.0)
    assert free_bits_per_dimension(other, 0.5).item() == pytest.approx(1.05)


def test_free_bits_total_hinge_value_and_gradient():
    kl = torch.tensor([1.0, 5.0, 2.5], requires_grad=True)
    value = free_bits_total_hinge(kl, 3.0)
    assert value.item() == pytest.approx((0.0 + 2.0 + 0.0) / 3)
    value.backward()
    torch.testing.assert_close(kl.grad, torch.tensor([0.0, 1 / 3, 0.0]))


def test_free_bits_total_hinge_has_zero_gradient_below_threshold():
    kl_dims = torch.full((4, 8), 0.1, requires_grad=True)  # total 0.8 per sentence
    value = kl_penalty(kl_dims.sum(dim=1), variant="total_hinge", free_bits=1.0)
    assert value.item() == 0.0
    value.backward()
    assert torch.count_nonzero(kl_dims.grad) == 0


def test_kl_penalty_without_free_bits_is_the_batch_mean_total_kl():
    kl_dims = torch.tensor([[1.0, 2.0], [3.0, 4.0]])
    assert kl_penalty(kl_dims.sum(dim=1)).item() == pytest.approx(5.0)
    with pytest.raises(ValueError, match="per_dimension"):
        kl_penalty(kl_dims.sum(dim=1), variant="batch")


def test_perplexity_divides_total_nll_by_tokens():
    from seqvae.evaluation import perplexity

    assert perplexity(100.0 * math.log(10.0), 100) == pytest.approx(10.0)


@pytest.mark.parametrize("free_bits", ["none", "per_example"])
def test_a_training_step_reads_the_device_once_and_its_figures_are_the_objectives(monkeypatch, free_bits):
    """On a GPU every read of a value waits for the queue: train_step reads its figures and the
    gradient norm together, once, after the backward pass. The figures equal the objective's."""
    from seqvae.config import ModelConfig, ObjectiveConfig
    from seqvae.data.batching import collate
    from seqvae.losses import elbo_objective
    from seqvae.models.vae import build_model
    from seqvae.training import build_optimizer, train_step

    torch.manual_seed(0)
    model = build_model(ModelConfig(embedding_dim=8, hidden_dim=8, latent_dim=4), vocab_size=12)
    batch = collate([[4, 5, 6], [7, 8], [9, 10, 11, 4]])
    objective = ObjectiveConfig(free_bits=free_bits, free_bits_lambda=0.1)
    reads = []
    for name in ("item", "tolist", "__float__", "__bool__", "__int__"):
        original = getattr(torch.Tensor, name)
        monkeypatch.setattr(torch.Tensor, name, lambda self, *a, _o=original, _n=name, **k: (reads.append(_n), _o(self, *a, **k))[1])
    optimizer = build_optimizer(model.parameters(), learning_rate=1e-3, device=torch.device("cpu"))
    state = {key: value.clone() for key, value in model.state_dict().items()}
    rng = torch.get_rng_state()
    terms = train_step(model, optimizer, batch, kl_weight=0.5, objective=objective, grad_clip=5.0)
    assert reads == ["tolist"]
    monkeypatch.undo()
    model.load_state_dict(state)
    torch.set_rng_state(rng)
    expected = elbo_objective(model(batch, word_dropout_rate=objective.word_dropout), batch, kl_weight=0.5, free_bits=free_bits, free_bits_lambda=0.1)
    assert (terms.loss, terms.reconstruction, terms.kl, terms.kl_penalty) == tuple(expected.figures.tolist())
    assert terms.loss == pytest.approx(terms.reconstruction + 0.5 * terms.kl_penalty, rel=1e-6)

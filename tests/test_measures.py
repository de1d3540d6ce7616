"""Measures against independent references: quadrature, constructed posteriors, fake decoders."""

import math

import pytest
import torch

from seqvae.config import ModelConfig
from seqvae.data.batching import collate
from seqvae.measures import (
    active_units,
    corpus_bleu,
    importance_weighted_log_likelihood,
    inputless_nll,
    mutual_information,
    standard_normal_log_prob,
    teacher_forced_and_free_running_nll,
)
from seqvae.models.posterior import DiagonalGaussian
from seqvae.models.vae import build_model


def _toy_model(latent_dim=1, vocab_size=8):
    torch.manual_seed(0)
    config = ModelConfig(embedding_dim=6, hidden_dim=8, latent_dim=latent_dim, injection=("initial_state", "concat"))
    model = build_model(config, vocab_size=vocab_size).eval()
    with torch.no_grad():  # make p(x|z) depend strongly on z, so the integral is not trivial
        model.decoder.latent_to_state.weight.mul_(4.0)
    return model


def _toy_batch():
    return collate([[4, 5], [6], [7, 4, 6]])


def test_standard_normal_log_prob():
    z = torch.tensor([[0.0, 1.0], [2.0, -1.0]])
    reference = torch.distributions.Normal(0.0, 1.0).log_prob(z).sum(-1)
    torch.testing.assert_close(standard_normal_log_prob(z), reference)


def test_iw_nll_matches_numerical_integration_on_a_one_dimensional_model():
    model = _toy_model()
    batch = _toy_batch()
    grid = torch.linspace(-10.0, 10.0, 8001).unsqueeze(1)  # (G, 1)
    exact = []
    with torch.no_grad():
        for row in range(batch.num_sentences):
            inputs = batch.inputs[row : row + 1].expand(len(grid), -1)
            targets = batch.targets[row : row + 1].expand(len(grid), -1)
            mask = batch.mask[row : row + 1].expand(len(grid), -1)
            log_probs, _ = model.decoder.log_probs(inputs, grid)  # the full distribution, then gathered
            token = log_probs.gather(-1, targets.unsqueeze(-1)).squeeze(-1)
            integrand = (token * mask).sum(1) + standard_normal_log_prob(grid)
            exact.append(torch.logsumexp(integrand, dim=0) + math.log(20.0 / 8000))
    exact = torch.stack(exact)
    generator = torch.Generator().manual_seed(0)
    estimate = importance_weighted_log_likelihood(model, batch, num_samples=4000, chunk_size=500, generator=generator)
    assert torch.allclose(-estimate, -exact, rtol=0.01)
    # a memory bound of one sample's scores per decoder call: chunks of one sample, the same codes
    scores = batch.inputs.numel() * model.decoder.output.scores_per_position
    bounded = importance_weighted_log_likelihood(
        model, batch, num_samples=4000, scores_per_call=scores, generator=torch.Generator().manual_seed(0)
    )
    torch.testing.assert_close(bounded, estimate, rtol=1e-5, atol=1e-5)
    calls = []
    hook = model.decoder.register_forward_hook(lambda module, args, out: calls.append(args[0].shape[0]))
    importance_weighted_log_likelihood(model, batch, num_samples=7, scores_per_call=2 * scores - 1)
    hook.remove()
    assert calls == [batch.num_sentences] * 7


def test_iw_bound_is_at_least_the_elbo_and_tightens_with_k():
    model = _toy_model(latent_dim=3, vocab_size=12)
    with torch.no_grad():  # a poor proposal (shifted, narrow) makes the gains of larger K visible
        model.posterior.projection.bias[:3] += 1.0
        model.posterior.projection.bias[3:] -= 1.0
    batch = _toy_batch()
    posterior = model.encode(batch)
    means = {}
    for k, repeats in ((1, 200), (10, 200), (200, 30)):
        estimates = [
            importance_weighted_log_likelihood(model, batch, num_samples=k, generator=torch.Generator().manual_seed(seed))
            for seed in range(repeats)
        ]
        means[k] = torch.stack(estimates).mean(0)
    with torch.no_grad():  # the ELBO with analytic KL; its expectation is by Monte Carlo over 3000 draws
        z = posterior.mean + posterior.std * torch.randn(3000, *posterior.mean.shape, generator=torch.Generator().manual_seed(1))
        flat = z.reshape(-1, z.shape[-1])
        rec = model.decoder.sequence_nll(
            batch.inputs.repeat(3000, 1), flat, batch.targets.repeat(3000, 1), batch.mask.repeat(3000, 1)
        ).view(3000, -1).mean(0)
        elbo = -rec - posterior.kl()
    # K = 1 is the ELBO in expectation (standard error of the 200-run mean about 0.1 here)
    torch.testing.assert_close(means[1], elbo, atol=0.4, rtol=0)
    assert bool((means[10] > elbo + 0.5).all()) and bool((means[200] > means[10] + 0.3).all())


def test_mutual_information_of_constructed_posteriors():
    generator = torch.Generator().manual_seed(0)
    # identical posteriors: I = 0; the one-sample estimate has standard error sqrt(Z / 2 / N) = 0.022
    same = DiagonalGaussian(mean=torch.zeros(4000, 4), logvar=torch.zeros(4000, 4))
    assert abs(mutual_information(same, generator=generator)) < 0.1
    # two equally likely, well-separated, narrow posteriors: I(x; z) = log 2 (standard error 0.016)
    two = DiagonalGaussian(
        mean=torch.tensor([[10.0, 0.0], [-10.0, 0.0]]).repeat(2000, 1), logvar=torch.full((4000, 2), -4.0)
    )
    assert mutual_information(two, generator=generator) == pytest.approx(math.log(2), abs=0.07)
    # eight distinct narrow posteriors: log 8 (standard error 0.011)
    eight = DiagonalGaussian(mean=torch.arange(8.0).unsqueeze(1).repeat(500, 1) * 20, logvar=torch.full((4000, 1), -2.0))
    assert mutual_information(eight, generator=generator) == pytest.approx(math.log(8), abs=0.05)
    # the mini-batch variant (He et al. 2019) cannot exceed log(group size): here log 2
    assert mutual_information(eight, group_size=2, generator=generator) == pytest.approx(math.log(2), abs=0.05)


def test_active_units_on_constructed_means():
    generator = torch.Generator().manual_seed(0)
    base = torch.randn(5000, 4, generator=generator)
    means = base * torch.tensor([1.0, 0.15, 0.05, 0.0])  # variances 1, 0.0225, 0.0025, 0
    assert active_units(means) == 2
    assert active_units(means, threshold=0.001) == 3


class _SuccessorDecoder(torch.nn.Module):
    """A fake decoder whose most likely next token is a fixed function of the input token."""

    def __init__(self, successor: dict[int, int], vocab_size: int = 10) -> None:
        super().__init__()
        self.table = torch.full((vocab_size, vocab_size), -3.0)
        for token, following in successor.items():
            self.table[token, following] = 3.0

    def log_probs(self, inputs, z, state=None):
        return self.table[inputs].log_softmax(-1), state

    def sequence_nll(self, inputs, z, targets, mask):
        log_probs, _ = self.log_probs(inputs, z)
        return -(log_probs.gather(-1, targets.unsqueeze(-1)).squeeze(-1) * mask).sum(1)


def test_free_running_equals_teacher_forced_when_greedy_predictions_are_the_references():
    batch = collate([[4, 5, 6], [4, 5]])
    z = torch.zeros(2, 1)
    decoder = _SuccessorDecoder({2: 4, 4: 5, 5: 6, 6: 3})
    teacher, free = teacher_forced_and_free_running_nll(decoder, batch, z)
    # both sentences' read prefixes (<bos> 4 5 6 and <bos> 4 5) are the greedy predictions
    torch.testing.assert_close(free, teacher)
    wrong = _SuccessorDecoder({2: 7, 7: 8, 4: 5, 5: 6, 6: 3})
    teacher, free = teacher_forced_and_free_running_nll(wrong, batch, z)
    assert bool((free > teacher).all())


@pytest.mark.parametrize("decode_length", [2, 6, 12])
def test_free_running_pass_returns_exactly_the_greedy_decodes(decode_length):
    from seqvae.generation import greedy_decode

    model = _toy_model(latent_dim=2, vocab_size=8)
    batch = collate([[4, 5, 6, 7], [4], [6, 6]])
    z = torch.randn(3, 2, generator=torch.Generator().manual_seed(0)) * 3
    teacher, free = teacher_forced_and_free_running_nll(model.decoder, batch, z)
    teacher2, free2, ids = teacher_forced_and_free_running_nll(model.decoder, batch, z, decode_length=decode_length)
    torch.testing.assert_close(free2, free)
    torch.testing.assert_close(teacher2, teacher)
    assert ids == greedy_decode(model.decoder, z, max_length=decode_length)


def test_inputless_nll_reads_only_begin_and_unknown_tokens():
    seen = []

    class Recorder(torch.nn.Module):
        def sequence_nll(self, inputs, z, targets, mask):
            seen.append(inputs.clone())
            return torch.zeros(inputs.shape[0])

    batch = collate([[4, 5, 6], [7]])
    inputless_nll(Recorder(), batch, torch.zeros(2, 1))
    assert seen[0].tolist() == [[2, 1, 1, 1], [2, 1, 0, 0]]


def test_bleu_is_100_for_perfect_reconstructions_and_less_otherwise():
    references = ["the cat sat on the mat .", "a dog ran in the park today ."]
    assert corpus_bleu(references, references) == pytest.approx(100.0)
    assert corpus_bleu(["the cat sat on a mat .", "a dog ran in the park today ."], references) < 100.0


def test_distinct_n_counts_unique_ngrams():
    from seqvae.measures import distinct_n

    sentences = ["a b a b", "a b c"]
    assert distinct_n(sentences, 1) == pytest.approx(3 / 7)
    assert distinct_n(sentences, 2) == pytest.approx(3 / 5)  # ab ba ab | ab bc
    assert distinct_n([], 2) == 0.0


def test_self_bleu_is_100_for_identical_samples_and_low_for_different_ones():
    from seqvae.measures import self_bleu

    assert self_bleu(["the cat sat on the mat ."] * 3) == pytest.approx(100.0)
    assert self_bleu(["the cat sat on the mat .", "a dog ran in a park today", "birds fly south every winter"]) < 10.0


def test_self_bleu_equals_sacrebleus_sentence_bleu_of_each_sentence_against_the_others():
    """The independent reference: sacrebleu's sentence BLEU, computed sentence by sentence, on
    sets with repeated sentences, tied n-gram counts, equal lengths, empty and one-word sentences."""
    import random

    import sacrebleu

    from seqvae.measures import self_bleu

    generator = random.Random(0)
    for _ in range(200):
        words = "abcdefghij"[: generator.choice([2, 3, 10])]
        sentences = [" ".join(generator.choice(words) for _ in range(generator.randint(0, 9))) for _ in range(generator.randint(2, 10))]
        sentences += sentences[: generator.randint(0, 2)]  # repeats: an n-gram's largest count held twice
        expected = [
            sacrebleu.sentence_bleu(sentence, sentences[:i] + sentences[i + 1 :], tokenize="none").score
            for i, sentence in enumerate(sentences)
        ]
        assert self_bleu(sentences) == pytest.approx(sum(expected) / len(expected), abs=1e-9), sentences
    with pytest.raises(ValueError):
        self_bleu(["only one"])


def test_self_log_likelihood_per_token_matches_a_direct_computation():
    from seqvae.measures import self_log_likelihood_per_token

    model = _toy_model(latent_dim=2, vocab_size=9)
    z = torch.randn(2, 2, generator=torch.Generator().manual_seed(0))
    ids = [[4, 5, 6], [7]]
    got = self_log_likelihood_per_token(model.decoder, z, ids)
    for row, sentence in enumerate(ids):
        one = collate([sentence])
        log_probs, _ = model.decoder.log_probs(one.inputs, z[row : row + 1])
        token = log_probs.gather(-1, one.targets.unsqueeze(-1)).squeeze(-1)
        expected = (token * one.mask).sum(1) / (len(sentence) + 1)
        torch.testing.assert_close(got[row : row + 1], expected.detach())


def test_diagnostics_fire_on_collapse_and_overload_and_stay_quiet_when_healthy():
    from seqvae.measures import diagnose

    assert diagnose(kl=5.0, active=8, mean_posterior_std=0.3, free_bits_target=8.0) == []
    collapsed = diagnose(kl=0.02, active=0, mean_posterior_std=0.99)
    assert len(collapsed) == 1 and "posterior collapse: KL 0.0200" in collapsed[0]
    narrow = diagnose(kl=300.0, active=16, mean_posterior_std=0.001, free_bits_target=8.0)
    assert len(narrow) == 2 and "mean posterior std 0.001" in narrow[0] and "KL 300.00 nats > 10 x" in narrow[1]
    # a constructed collapsed posterior and a constructed overloaded one, measured end to end
    collapsed_posterior = DiagonalGaussian(mean=torch.zeros(100, 4) + 1e-3, logvar=torch.zeros(100, 4))
    kl = float(collapsed_posterior.kl().mean())
    assert diagnose(kl=kl, active=active_units(collapsed_posterior.mean), mean_posterior_std=1.0)[0].startswith("posterior collapse")
    overloaded = DiagonalGaussian(mean=torch.randn(100, 4) * 3, logvar=torch.full((100, 4), -12.0))
    figures = dict(kl=float(overloaded.kl().mean()), active=active_units(overloaded.mean))
    assert diagnose(**figures, mean_posterior_std=float(overloaded.std.mean()))[0].startswith("information overload")


def test_linear_probe_reads_a_linearly_coded_attribute_and_not_an_independent_one():
    from seqvae.measures import linear_probe_accuracy

    generator = torch.Generator().manual_seed(0)
    features = torch.randn(400, 6, generator=generator)
    # three classes, each the argmax of a linear function of the features: linearly separable
    coded = (features[:, :3] @ torch.tensor([[2.0, 0, 0], [0, 2.0, 0], [0, 0, 2.0]])).argmax(1).tolist()
    accuracy, majority = linear_probe_accuracy(features, [f"c{value}" for value in coded])
    assert accuracy >= 0.95 and majority < 0.5
    # labels drawn independently of the features: no better than the majority class (up to noise)
    independent = torch.randint(0, 2, (400,), generator=generator).tolist()
    accuracy, majority = linear_probe_accuracy(features, independent)
    assert abs(accuracy - 0.5) < 0.1 and abs(majority - 0.5) < 0.1
    # the majority rate of an imbalanced attribute: predicting the frequent class everywhere
    imbalanced = ["a"] * 300 + ["b"] * 100
    assert linear_probe_accuracy(torch.zeros(400, 2), imbalanced)[1] == pytest.approx(0.75)
    assert linear_probe_accuracy(features, coded, seed=3) == linear_probe_accuracy(features, coded, seed=3)
    with pytest.raises(ValueError, match="3 labels for 400"):
        linear_probe_accuracy(features, [0, 1, 2])


def test_a_decode_cut_before_eos_is_scored_on_its_words_alone():
    from seqvae.measures import self_log_likelihood_per_token

    model = _toy_model(latent_dim=2, vocab_size=12)
    z = torch.randn(3, 2, generator=torch.Generator().manual_seed(0))
    ids = [[5, 6, 7], [8, 9], [10, 4, 5]]
    ended = [True, True, False]
    scores = self_log_likelihood_per_token(model.decoder, z, ids, ended=ended)
    with torch.no_grad():
        for row, (tokens, done) in enumerate(zip(ids, ended)):
            inputs = torch.tensor([[2] + tokens])  # <bos> x_1 .. x_n
            log_probs, _ = model.decoder.log_probs(inputs, z[row : row + 1])
            targets = tokens + [3] if done else tokens  # <eos> only where the decode produced it
            total = sum(float(log_probs[0, i, t]) for i, t in enumerate(targets))
            assert float(scores[row]) == pytest.approx(total / len(targets), rel=1e-5)


def test_homotopy_endpoint_bleu_and_falling_share_on_constructed_paths():
    import sacrebleu

    from seqvae.measures import homotopy_endpoint_bleu, homotopy_falling_share

    pairs = [("a b c d e", "v w x y z"), ("the cat sat on the mat", "a dog ran in the park")]
    exact = [["a b c d e", "a b c y z", "v w x y z"], ["the cat sat on the mat", "the dog sat in the park", "a dog ran in the park"]]
    assert homotopy_endpoint_bleu(exact, pairs) == pytest.approx(100.0)
    assert homotopy_falling_share(exact, pairs) == 0.0  # BLEU to x1 rises at every step
    wrong_ends = [["q r s t u", "a b c y z", "q r s t u"], ["q r s t u", "q r s t u", "q r s t u"]]
    assert homotopy_endpoint_bleu(wrong_ends, pairs) == pytest.approx(0.0)
    # one step of four falls: the first path goes back to an unrelated sentence at its end
    detour = [["a b c d e", "v w x y z", "a b c d e"], exact[1]]
    assert homotopy_falling_share(detour, pairs) == pytest.approx(1 / 4)
    expected = sacrebleu.corpus_bleu(["a b c d e", "the cat sat on the mat", "a b c d e", "a dog ran in the park"],
                                     [[first for first, _ in pairs] + [second for _, second in pairs]], tokenize="none").score
    assert homotopy_endpoint_bleu(detour, pairs) == pytest.approx(expected)

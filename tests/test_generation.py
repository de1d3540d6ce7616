"""Decoding strategies and interpolation paths, against greedy decoding and exhaustive search."""

import itertools
import math

import pytest
import torch

from seqvae.config import ModelConfig
from seqvae.data.tokenizers import EOS_ID
from seqvae.generation import (
    Decoding,
    beam_decode,
    decode,
    filter_logits,
    greedy_decode,
    linear_path,
    sample_decode,
    slerp_path,
)
from seqvae.models.vae import build_model

DECODERS = [
    ("lstm", ("initial_state", "concat")),
    ("lstm", ("add",)),
    ("transformer", ("memory",)),
    ("transformer", ("prefix",)),
    ("transformer", ("add",)),
]


def _decoder(kind="lstm", injection=("initial_state", "concat"), vocab_size=12, seed=0):
    torch.manual_seed(seed)
    config = ModelConfig(
        decoder=kind, injection=injection, embedding_dim=8, hidden_dim=16, latent_dim=3, num_heads=2, ff_dim=32,
        decoder_layers=2 if kind == "transformer" else 1,
    )
    return build_model(config, vocab_size=vocab_size).eval().decoder


@pytest.mark.parametrize("kind,injection", DECODERS)
def test_beam_width_one_top_k_one_and_low_temperature_equal_greedy(kind, injection):
    decoder = _decoder(kind, injection)
    z = torch.randn(16, 3, generator=torch.Generator().manual_seed(1)) * 2
    greedy = greedy_decode(decoder, z, max_length=12)
    assert beam_decode(decoder, z, beam_size=1, max_length=12) == greedy
    generator = torch.Generator().manual_seed(0)
    assert sample_decode(decoder, z, top_k=1, max_length=12, generator=generator) == greedy
    assert sample_decode(decoder, z, temperature=1e-7, max_length=12, generator=generator) == greedy
    assert decode(decoder, z, Decoding("beam", beam_size=1, max_length=12)) == greedy


def _score(decoder, z, tokens: list[int]) -> float:
    """Sum of log p(token | prefix, z) over ``tokens`` (teacher forcing from <bos>)."""
    inputs = torch.tensor([[2] + tokens[:-1]])  # <bos> = 2
    log_probs, _ = decoder.log_probs(inputs, z)
    return float(log_probs[0, torch.arange(len(tokens)), torch.tensor(tokens)].sum())


@torch.no_grad()
def test_beam_search_wide_enough_finds_the_best_sentence_of_an_exhaustive_search():
    """Vocabulary of 6, at most 3 tokens: every hypothesis (ended by <eos> within 3 tokens, or
    3 tokens without one) can be scored. A beam as wide as the hypothesis space finds the best."""
    decoder = _decoder(vocab_size=6, seed=3)
    z = torch.randn(1, 3, generator=torch.Generator().manual_seed(5)) * 2
    others = [token for token in range(6) if token != EOS_ID]
    hypotheses = [list(seq) + [EOS_ID] for n in range(3) for seq in itertools.product(others, repeat=n)]
    hypotheses += [list(seq) for seq in itertools.product(others, repeat=3)]
    scores = {tuple(h): _score(decoder, z, h) for h in hypotheses}
    best = max(scores.values())

    def as_hypothesis(ids):
        return tuple(ids) + ((EOS_ID,) if len(ids) < 3 else ())

    wide = beam_decode(decoder, z, beam_size=len(others) ** 3, max_length=3)[0]
    assert scores[as_hypothesis(wide)] == pytest.approx(best)
    greedy = greedy_decode(decoder, z, max_length=3)[0]
    assert scores[as_hypothesis(greedy)] <= best + 1e-6


@pytest.mark.parametrize("kind,injection", DECODERS)
def test_beam_search_batched_equals_one_sentence_at_a_time_and_respects_min_length(kind, injection):
    decoder = _decoder(kind, injection, vocab_size=10)
    z = torch.randn(5, 3, generator=torch.Generator().manual_seed(2)) * 2
    batched = beam_decode(decoder, z, beam_size=3, max_length=8, length_penalty=1.0)
    single = [beam_decode(decoder, z[i : i + 1], beam_size=3, max_length=8, length_penalty=1.0)[0] for i in range(5)]
    assert batched == single
    assert all(len(row) >= 4 for row in beam_decode(decoder, z, beam_size=3, max_length=8, min_length=4))
    assert all(EOS_ID not in row for row in batched)


def test_seeded_sampling_reproduces_and_different_seeds_differ():
    decoder = _decoder()
    z = torch.randn(20, 3, generator=torch.Generator().manual_seed(0))

    def run(seed, **options):
        return sample_decode(decoder, z, max_length=10, generator=torch.Generator().manual_seed(seed), **options)

    assert run(1) == run(1) and run(1, top_p=0.8) == run(1, top_p=0.8)
    assert run(1) != run(2)


def test_filter_logits_keeps_the_top_k_and_the_nucleus():
    scores = torch.log(torch.tensor([[0.5, 0.3, 0.15, 0.05]]))
    kept = lambda filtered: torch.isfinite(filtered)[0].tolist()  # noqa: E731
    assert kept(filter_logits(scores, top_k=2)) == [True, True, False, False]
    assert kept(filter_logits(scores, top_p=0.5)) == [True, False, False, False]  # 0.5 reaches 0.5
    assert kept(filter_logits(scores, top_p=0.6)) == [True, True, False, False]
    assert kept(filter_logits(scores, top_p=0.95)) == [True, True, True, False]
    assert kept(filter_logits(scores, top_p=1e-6)) == [True, False, False, False]  # the best always stays
    shuffled = scores[:, [2, 0, 3, 1]]
    assert kept(filter_logits(shuffled, top_p=0.6)) == [False, True, False, True]


def test_decoding_options_are_checked():
    for options, message in [
        ({"strategy": "nucleus"}, "strategy"),
        ({"temperature": 0.0}, "temperature"),
        ({"top_p": 0.0}, "top_p"),
        ({"beam_size": 0}, "beam_size"),
        ({"min_length": 5, "max_length": 5}, "min_length"),
    ]:
        with pytest.raises(ValueError, match=message):
            Decoding(**options)


def test_linear_and_slerp_paths_start_and_end_at_the_inputs_and_slerp_keeps_the_norm():
    generator = torch.Generator().manual_seed(0)
    start, end = torch.randn(8, generator=generator), torch.randn(8, generator=generator)
    end = end / end.norm() * start.norm()  # same norm
    for path in (linear_path, slerp_path):
        t, codes = path(start, end, 7)
        assert torch.allclose(t, torch.linspace(0, 1, 7))
        assert torch.allclose(codes[0], start, atol=1e-6) and torch.allclose(codes[-1], end, atol=1e-6)
    _, codes = slerp_path(start, end, 7)
    assert torch.allclose(codes.norm(dim=1), start.norm().expand(7), rtol=1e-5)
    _, straight = linear_path(start, end, 7)
    assert straight[3].norm() < start.norm()  # the chord dips inside the sphere
    # equal angles between consecutive points: constant speed along the great circle
    cosines = torch.nn.functional.cosine_similarity(codes[:-1], codes[1:], dim=1)
    assert torch.allclose(cosines, cosines[0].expand(6), atol=1e-5)
    _, parallel = slerp_path(start, 2 * start, 3)  # no angle: falls back to the line
    assert torch.allclose(parallel[1], 1.5 * start)
    assert math.isclose(float(torch.dot(codes[0], codes[-1])), float(torch.dot(start, end)), rel_tol=1e-5)


def test_nucleus_from_the_partial_ranking_equals_the_one_from_a_full_sort():
    generator = torch.Generator().manual_seed(0)
    for sharpness in (0.1, 1.0, 8.0):  # flat to peaked distributions over 5,000 tokens
        scores = torch.randn(6, 5000, generator=generator) * sharpness
        for top_p in (0.3, 0.9, 0.99):
            ordered, order = scores.sort(dim=-1, descending=True)
            probabilities = ordered.softmax(-1)
            drop = probabilities.cumsum(-1) - probabilities >= top_p
            drop[:, 0] = False
            expected = torch.isfinite(scores.masked_fill(drop.scatter(1, order, drop), float("-inf")))
            assert torch.equal(torch.isfinite(filter_logits(scores, top_p=top_p)), expected)


def test_gumbel_max_draws_follow_the_softmax():
    from seqvae.generation import draw

    probabilities = torch.tensor([0.5, 0.3, 0.15, 0.05, 0.0])
    scores = probabilities.log().expand(40_000, -1)  # log 0 = -inf: never drawn
    counts = torch.bincount(draw(scores, generator=torch.Generator().manual_seed(0)), minlength=5).float()
    frequencies = counts / counts.sum()
    # 4 standard errors of a frequency estimated from 40,000 draws
    tolerance = 4 * (probabilities * (1 - probabilities) / 40_000).sqrt()
    assert torch.all((frequencies - probabilities).abs() <= tolerance) and counts[4] == 0

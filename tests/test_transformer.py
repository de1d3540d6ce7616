"""Transformer encoder and decoder, every injection mode, incremental decoding, every pairing."""

import pytest
import torch

from seqvae.config import ModelConfig
from seqvae.data.batching import collate
from seqvae.data.synthetic import generate_sentences
from seqvae.data.tokenizers import UNK_ID, WordTokenizer
from seqvae.generation import greedy_decode
from seqvae.losses import elbo_loss
from seqvae.models.vae import build_model

DECODER_SETTINGS = [
    ("lstm", ("initial_state",)),
    ("lstm", ("concat",)),
    ("lstm", ("add",)),
    ("transformer", ("memory",)),
    ("transformer", ("prefix",)),
    ("transformer", ("add",)),
    ("transformer", ("memory", "prefix", "add")),
]


def _model(encoder="transformer", decoder="transformer", injection=("memory",), **overrides):
    torch.manual_seed(0)
    config = ModelConfig(
        encoder=encoder,
        decoder=decoder,
        injection=injection,
        embedding_dim=12,
        hidden_dim=16,
        latent_dim=5,
        num_heads=2,
        ff_dim=24,
        encoder_layers=2,
        decoder_layers=2,
        **overrides,
    )
    return build_model(config, vocab_size=40).eval()


def _batch(lengths=(9, 4, 7), seed=0):
    generator = torch.Generator().manual_seed(seed)
    return collate([torch.randint(4, 40, (n,), generator=generator).tolist() for n in lengths])


@pytest.mark.parametrize("decoder, injection", DECODER_SETTINGS)
def test_decoder_is_causal(decoder, injection):
    model = _model(decoder=decoder, injection=injection)
    batch = _batch()
    z = torch.randn(3, 5)
    before, _ = model.decoder.log_probs(batch.inputs, z)
    changed = batch.inputs.clone()
    changed[:, 4] = 39
    after, _ = model.decoder.log_probs(changed, z)
    torch.testing.assert_close(after[:, :4], before[:, :4])
    assert not torch.allclose(after[:, 4:], before[:, 4:])


@pytest.mark.parametrize("decoder, injection", DECODER_SETTINGS)
def test_decoder_logits_do_not_depend_on_a_longer_neighbour(decoder, injection):
    model = _model(decoder=decoder, injection=injection)
    batch = _batch((4, 11))
    z = torch.randn(2, 5)
    together, _ = model.decoder.log_probs(batch.inputs, z)
    alone, _ = model.decoder.log_probs(batch.inputs[:1, :5], z[:1])
    torch.testing.assert_close(together[:1, :5], alone)


@pytest.mark.parametrize("encoder, pooling", [("lstm", "mean"), ("transformer", "mean"), ("transformer", "summary_token")])
def test_encoder_summary_does_not_depend_on_a_longer_neighbour(encoder, pooling):
    model = _model(encoder=encoder, pooling=pooling)
    batch = _batch((4, 11))
    short = _batch((4, 11))
    short.targets, short.lengths = batch.targets[:1, :5], batch.lengths[:1]
    torch.testing.assert_close(model.encode(short).mean, model.encode(batch).mean[:1])


@pytest.mark.parametrize("decoder, injection", DECODER_SETTINGS)
def test_each_injection_conditions_on_z(decoder, injection):
    model = _model(decoder=decoder, injection=injection)
    batch = _batch()
    first, _ = model.decoder.log_probs(batch.inputs, torch.zeros(3, 5))
    second, _ = model.decoder.log_probs(batch.inputs, torch.ones(3, 5))
    assert not torch.allclose(first, second)


@pytest.mark.parametrize("decoder, injection", DECODER_SETTINGS)
def test_incremental_decoding_matches_the_full_pass(decoder, injection):
    model = _model(decoder=decoder, injection=injection)
    batch = _batch()
    z = torch.randn(3, 5)
    full, _ = model.decoder.log_probs(batch.inputs, z)
    state, steps = None, []
    for position in range(batch.inputs.shape[1]):
        logits, state = model.decoder.log_probs(batch.inputs[:, position : position + 1], z, state)
        steps.append(logits)
    torch.testing.assert_close(torch.cat(steps, dim=1), full, rtol=1e-5, atol=1e-5)
    # a prefix of several tokens, then single steps, also agrees
    logits, state = model.decoder.log_probs(batch.inputs[:, :3], z)
    rest, _ = model.decoder.log_probs(batch.inputs[:, 3:], z, state)
    torch.testing.assert_close(torch.cat([logits, rest], dim=1), full, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("decoder, injection", DECODER_SETTINGS)
def test_inputless_decoder_depends_only_on_z_and_position(decoder, injection):
    model = _model(decoder=decoder, injection=injection).train()
    torch.manual_seed(1)
    model.decoder.eval()  # no dropout noise: only the inputs differ
    batch = collate([[7] * 6, [9, 10, 11, 12, 13, 14]])
    output = model(batch, use_mean=True, word_dropout_rate=1.0)  # the model replaces inputs by <unk>
    z = output.posterior.mean[:1].expand(2, -1)
    inputs = batch.inputs.masked_fill(batch.mask & (torch.arange(7) > 0), UNK_ID)
    logits, _ = model.decoder.log_probs(inputs, z)
    torch.testing.assert_close(logits[0], logits[1])


def test_sinusoidal_positions_and_tied_embeddings():
    model = _model(positions="sinusoidal", tie_embeddings=True)
    assert model.decoder.output.weight is model.decoder.embedding.weight
    batch = _batch()
    assert model.decoder.log_probs(batch.inputs, torch.zeros(3, 5))[0].shape == (3, 10, 40)
    assert model(batch).reconstruction.shape == (3,)


def test_learned_positions_refuse_sequences_beyond_their_table():
    model = _model(max_positions=6)
    with pytest.raises(ValueError, match="max_positions=6"):
        model(_batch((9,)))


@pytest.mark.parametrize(
    "encoder, decoder, injection",
    [
        ("lstm", "lstm", ("initial_state", "concat")),
        ("lstm", "transformer", ("memory",)),
        ("transformer", "lstm", ("initial_state", "concat")),
        ("transformer", "transformer", ("prefix", "add")),
    ],
)
def test_every_pairing_overfits_a_tiny_corpus(encoder, decoder, injection):
    sentences = [s.text for s in generate_sentences(20, seed=5)]
    tokenizer = WordTokenizer.build(sentences)
    batch = collate([tokenizer.encode(s) for s in sentences])
    torch.manual_seed(0)
    config = ModelConfig(
        encoder=encoder, decoder=decoder, injection=injection, embedding_dim=32, hidden_dim=64, latent_dim=8,
        num_heads=4, ff_dim=128, encoder_layers=1, decoder_layers=2,
    )
    model = build_model(config, vocab_size=tokenizer.vocab_size)
    optimizer = torch.optim.Adam(model.parameters(), lr=0.005)
    for _ in range(200):
        loss = elbo_loss(model(batch), batch, kl_weight=0.0).total
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    model.eval()
    decoded = greedy_decode(model.decoder, model.encode(batch).mean, max_length=40)
    assert [tokenizer.decode(ids) for ids in decoded] == sentences


@pytest.mark.parametrize("decoder, injection", [("lstm", ("initial_state", "concat")), ("transformer", ("prefix",))])
def test_greedy_decoding_with_the_cache_equals_recomputing_the_prefix(decoder, injection):
    model = _model(decoder=decoder, injection=injection)
    z = torch.randn(4, 5)
    cached = greedy_decode(model.decoder, z, max_length=12, min_length=12)
    assert all(len(ids) == 12 for ids in cached)
    tokens = torch.full((4, 1), 2)  # <bos>
    for position in range(12):
        logits, _ = model.decoder.log_probs(tokens, z)  # the whole prefix again, no cache
        scores = logits[:, -1].clone()
        scores[:, 3] = float("-inf")  # <eos> barred, as min_length does
        tokens = torch.cat([tokens, scores.argmax(-1, keepdim=True)], dim=1)
    assert tokens[:, 1:].tolist() == cached

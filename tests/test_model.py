import pytest
import torch

from seqvae.config import ModelConfig
from seqvae.data.batching import collate
from seqvae.models.vae import build_model


def _model(**overrides):
    torch.manual_seed(0)
    config = ModelConfig(embedding_dim=12, hidden_dim=20, latent_dim=6, **overrides)
    return build_model(config, vocab_size=40)


def _random_batch(lengths=(9, 4, 7), seed=0):
    generator = torch.Generator().manual_seed(seed)
    return collate([torch.randint(4, 40, (n,), generator=generator).tolist() for n in lengths])


def test_shapes_with_unequal_dimensions():
    model = _model(bidirectional=True, encoder_layers=2, decoder_layers=2)
    batch = _random_batch()
    output = model(batch)
    assert output.reconstruction.shape == (3,)
    assert model.decoder.log_probs(batch.inputs, output.z)[0].shape == (3, 10, 40)
    assert output.posterior.mean.shape == (3, 6) and output.z.shape == (3, 6)


def test_encoder_is_invariant_to_padding():
    model = _model(bidirectional=True).eval()
    batch = _random_batch((5, 12))
    alone = collate([batch.targets[0, :5].tolist()])  # sentence 0 without the long neighbour
    alone.targets = batch.targets[:1, :6]
    alone.lengths = batch.lengths[:1]
    torch.testing.assert_close(model.encode(alone).mean, model.encode(batch).mean[:1])


def test_tied_embeddings_share_the_matrix():
    model = _model(tie_embeddings=True)
    assert model.decoder.output.weight is model.decoder.embedding.weight
    batch = _random_batch()
    assert model.decoder.log_probs(batch.inputs, torch.zeros(3, 6))[0].shape[-1] == 40


# Overfitting 20 sentences, for every encoder/decoder pairing: tests/test_transformer.py.


@pytest.mark.parametrize("bidirectional", [False, True])
@pytest.mark.parametrize("layers", [1, 2])
@pytest.mark.parametrize("lengths", [(9, 4, 7), (6, 6, 6)])
def test_lstm_encoder_summary_equals_the_packed_sequence_reference(bidirectional, layers, lengths):
    from torch.nn.utils.rnn import pack_padded_sequence

    model = _model(bidirectional=bidirectional, encoder_layers=layers).eval()
    batch = _random_batch(lengths, seed=3)
    encoder = model.encoder
    embedded = encoder.embedding(batch.targets)
    packed = pack_padded_sequence(embedded, batch.lengths, batch_first=True, enforce_sorted=False)
    _, (hidden, _) = encoder.lstm(packed)
    reference = torch.cat([hidden[-2], hidden[-1]], dim=-1) if bidirectional else hidden[-1]
    torch.testing.assert_close(encoder(batch.targets, batch.lengths), reference, rtol=1e-6, atol=1e-6)


def test_uniform_init_sets_the_ranges_of_the_he_et_al_code_and_spares_flows_and_norms():
    default = _model(flow="iaf", flow_steps=1, flow_hidden=12, posterior="batchnorm", posterior_gamma=0.6)
    model = _model(init="uniform", flow="iaf", flow_steps=1, flow_hidden=12, posterior="batchnorm", posterior_gamma=0.6)
    parameters = dict(model.named_parameters())
    for name, parameter in parameters.items():
        if ".flow." in name or "mean_norm" in name:  # their own initialisation, as built by default
            torch.testing.assert_close(parameter, dict(default.named_parameters())[name])
        elif "embedding" in name:
            assert 0.05 < parameter.abs().max() <= 0.1, name
        else:
            assert 0.005 < parameter.abs().max() <= 0.01, name
    assert parameters["posterior.mean_norm.weight"].eq(0.6).all()
    assert model.decoder.embedding.weight[0].eq(0).all()  # the padding row


def test_uniform_init_of_a_tied_output_layer_keeps_the_embedding_range():
    model = _model(init="uniform", tie_embeddings=True)
    assert model.decoder.output.weight is model.decoder.embedding.weight
    assert 0.05 < model.decoder.embedding.weight.abs().max() <= 0.1


def test_an_unknown_init_is_refused():
    with pytest.raises(ValueError, match="unknown init 'normal'"):
        _model(init="normal")

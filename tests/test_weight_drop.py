"""model.weight_drop: DropConnect on the LSTM decoder's recurrent weights (Wan et al. 2013;
Merity et al. 2018), checked against a plain nn.LSTM given the dropped weights by hand."""

import pytest
import torch
from torch import nn

from seqvae.config import ModelConfig, load_config
from seqvae.errors import SeqVAEError
from seqvae.models.decoders import LSTMDecoder
from seqvae.models.vae import build_model
from seqvae.training import train

from conftest import tiny_config, without_stops


def _decoder(weight_drop, layers=2):
    torch.manual_seed(3)
    return LSTMDecoder(vocab_size=11, embedding_dim=5, hidden_dim=4, latent_dim=3, num_layers=layers, weight_drop=weight_drop)


def _plain_copy(decoder):
    """An nn.LSTM with the decoder's undropped weights under their plain names."""
    lstm = decoder.lstm
    plain = nn.LSTM(lstm.input_size, lstm.hidden_size, num_layers=lstm.num_layers, batch_first=True)
    with torch.no_grad():
        for name, parameter in plain.named_parameters():
            if name.startswith("weight_hh"):
                parameter.copy_(lstm.parametrizations[name].original)
            else:
                parameter.copy_(getattr(lstm, name))
    return plain


def _inputs(decoder):
    torch.manual_seed(4)
    tokens, z = torch.randint(1, 11, (2, 6)), torch.randn(2, 3)
    embedded = torch.cat([decoder.embedding(tokens), z.unsqueeze(1).expand(-1, 6, -1)], dim=-1)
    return tokens, z, embedded, decoder.initial_state(z)


def test_training_drops_the_recurrent_weights_with_one_mask_for_every_time_step():
    p = 0.5
    decoder = _decoder(p).train()
    tokens, z, embedded, state = _inputs(decoder)
    plain = _plain_copy(decoder)
    torch.manual_seed(7)
    features, _ = decoder(tokens, z)
    # the same draws by hand: one Bernoulli mask per layer, in layer order, kept for all 6 steps
    torch.manual_seed(7)
    masks = [nn.functional.dropout(torch.ones_like(plain.weight_hh_l0), p, True) for _ in range(2)]
    with torch.no_grad():
        plain.weight_hh_l0.mul_(masks[0])
        plain.weight_hh_l1.mul_(masks[1])
    expected, _ = plain(embedded, state)
    assert torch.allclose(features, expected, atol=1e-6)
    assert (masks[0] == 0).any() and (masks[0] == 1 / (1 - p)).any()
    # dropped weights get no gradient, kept ones do
    features.pow(2).sum().backward()
    gradient = decoder.lstm.parametrizations.weight_hh_l0.original.grad
    assert (gradient[masks[0] == 0] == 0).all() and (gradient[masks[0] != 0] != 0).any()


def test_a_new_batch_draws_a_new_mask_and_evaluation_uses_the_whole_weights():
    decoder = _decoder(0.5)
    tokens, z, embedded, state = _inputs(decoder)
    decoder.train()
    first, second = decoder(tokens, z)[0], decoder(tokens, z)[0]
    assert not torch.equal(first, second)
    decoder.eval()
    with torch.no_grad():
        evaluated = decoder(tokens, z)[0]
        assert torch.allclose(evaluated, _plain_copy(decoder)(embedded, state)[0], atol=1e-6)
        # incremental decoding (the cached path) gives the full pass's features
        steps, carried = [], None
        for position in range(tokens.shape[1]):
            step, carried = decoder(tokens[:, position : position + 1], z, carried)
            steps.append(step)
        assert torch.allclose(torch.cat(steps, dim=1), evaluated, atol=1e-6)


def test_without_weight_drop_the_decoder_is_unchanged():
    names = list(build_model(ModelConfig(), vocab_size=30).state_dict())
    assert "decoder.lstm.weight_hh_l0" in names and not any("parametrizations" in name for name in names)
    dropped = list(build_model(ModelConfig(weight_drop=0.3), vocab_size=30).state_dict())
    assert "decoder.lstm.parametrizations.weight_hh_l0.original" in dropped and len(dropped) == len(names)


def test_weight_drop_is_refused_where_it_has_no_meaning(tmp_path):
    for override, message in [
        ("weight_drop = 1.0", "model.weight_drop': value 1.0 is out of range"),
        ('weight_drop = 0.2\ndecoder = "transformer"\ninjection = ["memory"]', "the transformer decoder has none"),
    ]:
        path = tmp_path / "config.toml"
        path.write_text(f"[model]\n{override}\n")
        with pytest.raises(SeqVAEError, match=message):
            load_config(path)


def test_a_weight_dropped_run_resumes_exactly_and_warm_starts_from_a_plain_one(tiny_corpus, tmp_path):
    settings = {"model": {"weight_drop": 0.3, "dropout": 0.2}, "train": {"epochs": 2, "checkpoint_every": 4}}
    train(tiny_config(tiny_corpus, tmp_path / "whole", **settings), progress=False)
    stopped = {**settings, "train": {**settings["train"], "max_steps": 11}}
    train(tiny_config(tiny_corpus, tmp_path / "parts", **stopped), progress=False)
    train(tiny_config(tiny_corpus, tmp_path / "parts", **settings), resume=True, progress=False)
    whole = torch.load(tmp_path / "whole" / "checkpoints" / "last.pt", weights_only=True)["model"]
    parts = torch.load(tmp_path / "parts" / "checkpoints" / "last.pt", weights_only=True)["model"]
    assert all(torch.equal(whole[key], parts[key]) for key in whole)
    assert without_stops(tmp_path / "whole") == without_stops(tmp_path / "parts")
    # a decoder trained without weight drop warm-starts one with it: the same tensors, renamed
    train(tiny_config(tiny_corpus, tmp_path / "plain", train={"epochs": 1}), progress=False)
    warm = {"model": {"weight_drop": 0.3}, "train": {"epochs": 1, "max_steps": 1, "init_from": str(tmp_path / "plain"),
                                                       "init_parts": ["decoder"], "learning_rate": 1e-12}}
    train(tiny_config(tiny_corpus, tmp_path / "warm", **warm), progress=False)
    plain = torch.load(tmp_path / "plain" / "checkpoints" / "best.pt", weights_only=True)["model"]
    started = torch.load(tmp_path / "warm" / "checkpoints" / "last.pt", weights_only=True)["model"]
    assert torch.allclose(started["decoder.lstm.parametrizations.weight_hh_l0.original"], plain["decoder.lstm.weight_hh_l0"], atol=1e-9)

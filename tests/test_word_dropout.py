import torch

from seqvae.config import ModelConfig
from seqvae.data.batching import collate
from seqvae.data.tokenizers import BOS_ID, PAD_ID, UNK_ID
from seqvae.models.vae import build_model
from seqvae.models.word_dropout import word_dropout


def _batch():
    generator = torch.Generator().manual_seed(0)
    sequences = [torch.randint(4, 50, (n,), generator=generator).tolist() for n in (30, 12, 25, 3) * 50]
    return collate(sequences)


def test_rate_matches_probability_on_droppable_tokens():
    batch = _batch()
    generator = torch.Generator().manual_seed(1)
    dropped = word_dropout(batch.inputs, batch.mask, rate=0.3, unk_id=UNK_ID, generator=generator)
    droppable = batch.mask.clone()
    droppable[:, 0] = False
    n = int(droppable.sum())
    share = float(((dropped == UNK_ID) & droppable).sum()) / n
    standard_error = (0.3 * 0.7 / n) ** 0.5
    assert abs(share - 0.3) < 4 * standard_error


def test_never_touches_begin_token_padding_or_targets():
    batch = _batch()
    targets_before = batch.targets.clone()
    dropped = word_dropout(batch.inputs, batch.mask, rate=1.0, unk_id=UNK_ID)
    assert torch.equal(dropped[:, 0], torch.full_like(dropped[:, 0], BOS_ID))
    assert torch.equal(dropped[~batch.mask], torch.full_like(dropped[~batch.mask], PAD_ID))
    inner = batch.mask.clone()
    inner[:, 0] = False
    assert bool((dropped[inner] == UNK_ID).all())  # rate 1: the inputless decoder
    assert torch.equal(batch.targets, targets_before)


def test_rate_zero_is_identity():
    batch = _batch()
    assert torch.equal(word_dropout(batch.inputs, batch.mask, rate=0.0, unk_id=UNK_ID), batch.inputs)


def _model():
    torch.manual_seed(0)
    return build_model(ModelConfig(embedding_dim=8, hidden_dim=8, latent_dim=2), vocab_size=50)


def test_model_applies_word_dropout_in_training_only():
    batch = _batch()
    model = _model()
    model.eval()
    clean = model(batch, use_mean=True).reconstruction
    assert torch.equal(model(batch, use_mean=True, word_dropout_rate=0.9).reconstruction, clean)
    model.train()
    noisy = model(batch, use_mean=True, word_dropout_rate=0.9).reconstruction
    assert not torch.allclose(noisy, clean)


def test_inputless_decoder_sees_only_z_and_position():
    batch = _batch()
    model = _model().train()
    output = model(batch, use_mean=True, word_dropout_rate=1.0)
    # two sentences with different words but equal length and equal z give equal distributions
    other = collate([[7] * 30, [9] * 30])
    z = output.z[:1].expand(2, -1)
    unk_inputs = other.inputs.masked_fill(other.mask & (torch.arange(other.inputs.shape[1]) > 0), UNK_ID)
    log_probs, _ = model.decoder.log_probs(unk_inputs, z)
    torch.testing.assert_close(log_probs[0], log_probs[1])

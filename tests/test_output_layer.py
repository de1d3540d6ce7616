"""The output layers: exact normalised distributions, target-only scoring equal to the full
distribution, decoding with the adaptive layer, tying, checks and old checkpoints."""

import pytest
import torch

from seqvae.config import ModelConfig, load_config
from seqvae.data.batching import collate
from seqvae.errors import SeqVAEError
from seqvae.generation import beam_decode, greedy_decode, sample_decode
from seqvae.models.output_layer import AdaptiveOutput, SoftmaxOutput
from seqvae.models.vae import build_model

VOCAB = 60
CUTOFFS = (10, 30)
PAIRINGS = [
    ("lstm", ("initial_state",)),
    ("lstm", ("concat",)),
    ("lstm", ("add",)),
    ("lstm", ("initial_state", "concat")),
    ("transformer", ("add",)),
    ("transformer", ("memory",)),
    ("transformer", ("prefix",)),
]
LAYERS = [("softmax", False), ("adaptive", False), ("adaptive", True), ("softmax", True)]


def _model(decoder="lstm", injection=("initial_state", "concat"), output_layer="adaptive", tie=False, seed=0):
    torch.manual_seed(seed)
    config = ModelConfig(
        decoder=decoder,
        injection=injection,
        embedding_dim=12,
        hidden_dim=16,
        latent_dim=3,
        num_heads=2,
        ff_dim=24,
        output_layer=output_layer,
        adaptive_cutoffs=CUTOFFS,
        adaptive_div_value=2.0,
        tie_embeddings=tie,
    )
    return build_model(config, vocab_size=VOCAB).eval()


def _batch(seed=0):
    generator = torch.Generator().manual_seed(seed)
    # targets from every part of the vocabulary: head words, both tail clusters
    lengths = (9, 4, 7, 1)
    return collate([torch.randint(4, VOCAB, (n,), generator=generator).tolist() for n in lengths])


@pytest.mark.parametrize("output_layer, tie", LAYERS)
@pytest.mark.parametrize("decoder, injection", PAIRINGS)
def test_the_full_log_distribution_sums_to_one(decoder, injection, output_layer, tie):
    model = _model(decoder, injection, output_layer, tie)
    batch = _batch()
    with torch.no_grad():
        log_probs, _ = model.decoder.log_probs(batch.inputs, torch.randn(4, 3))
    assert log_probs.shape == (4, batch.inputs.shape[1], VOCAB)
    torch.testing.assert_close(log_probs.logsumexp(-1), torch.zeros(log_probs.shape[:2]), atol=1e-5, rtol=0)


@pytest.mark.parametrize("output_layer, tie", LAYERS)
@pytest.mark.parametrize("decoder, injection", PAIRINGS)
def test_target_only_nll_equals_the_gather_from_the_full_distribution(decoder, injection, output_layer, tie):
    model = _model(decoder, injection, output_layer, tie)
    batch = _batch(seed=1)
    z = torch.randn(4, 3)
    log_probs, _ = model.decoder.log_probs(batch.inputs, z)
    gathered = -(log_probs.gather(-1, batch.targets.unsqueeze(-1)).squeeze(-1) * batch.mask).sum(1)
    target_only = model.decoder.sequence_nll(batch.inputs, z, batch.targets, batch.mask)
    torch.testing.assert_close(target_only, gathered, atol=1e-5, rtol=1e-5)
    # and so are the gradients of the two routes to the same number
    grads = []
    for value in (target_only.sum(), gathered.sum()):
        model.zero_grad()
        value.backward(retain_graph=True)
        grads.append({name: p.grad.clone() for name, p in model.named_parameters() if p.grad is not None})
    assert grads[0].keys() == grads[1].keys()
    for name in grads[0]:
        torch.testing.assert_close(grads[0][name], grads[1][name], atol=1e-5, rtol=1e-4)


def test_the_adaptive_target_only_path_touches_only_the_clusters_of_its_targets():
    model = _model()
    layer = model.decoder.output
    calls = []
    for index, cluster in enumerate(layer.tail):
        cluster.register_forward_hook(lambda module, args, out, index=index: calls.append((index, args[0].shape[0])))
    head_only = collate([[4, 5, 6, 7]])  # every target (and <eos>) below the first cutoff
    model.decoder.sequence_nll(head_only.inputs, torch.zeros(1, 3), head_only.targets, head_only.mask)
    assert calls == []
    mixed = collate([[4, 12, 40, 41]])  # one word of the first tail cluster, two of the second
    model.decoder.sequence_nll(mixed.inputs, torch.zeros(1, 3), mixed.targets, mixed.mask)
    assert calls == [(0, 1), (1, 2)]


@pytest.mark.parametrize("decoder, injection", [("lstm", ("initial_state", "concat")), ("transformer", ("memory",))])
def test_decoding_with_the_adaptive_layer_follows_its_full_distribution(decoder, injection):
    model = _model(decoder, injection)
    z = torch.randn(5, 3)
    greedy = greedy_decode(model.decoder, z, max_length=10, min_length=10)
    # the argmax of the full distribution recomputed over the whole prefix at every step
    tokens = torch.full((5, 1), 2)
    for _ in range(10):
        log_probs, _ = model.decoder.log_probs(tokens, z)
        scores = log_probs[:, -1].clone()
        scores[:, 3] = float("-inf")
        tokens = torch.cat([tokens, scores.argmax(-1, keepdim=True)], dim=1)
    assert tokens[:, 1:].tolist() == greedy
    assert beam_decode(model.decoder, z, beam_size=1, max_length=10, min_length=10) == greedy
    generator = torch.Generator().manual_seed(0)
    assert sample_decode(model.decoder, z, top_k=1, max_length=10, min_length=10, generator=generator) == greedy
    # sampling reaches the tail clusters: the distribution is over the whole vocabulary
    drawn = sample_decode(model.decoder, torch.randn(200, 3), max_length=5, min_length=5, generator=generator)
    assert max(max(row) for row in drawn) >= CUTOFFS[1]


def test_tied_adaptive_head_shares_the_embedding_rows_of_the_shortlist():
    model = _model(tie=True)
    layer = model.decoder.output
    assert isinstance(layer, AdaptiveOutput)
    assert layer.head.embedding is model.decoder.embedding.weight
    batch = _batch()
    model.decoder.sequence_nll(batch.inputs, torch.zeros(4, 3), batch.targets, batch.mask).sum().backward()
    # the input embedding gets gradient through the head as well as through the inputs
    features, _ = model.decoder(batch.inputs, torch.zeros(4, 3))
    expected = torch.cat([model.decoder.embedding.weight[: CUTOFFS[0]], layer.head.cluster_weight]) @ features[0, 0] + layer.head.bias
    torch.testing.assert_close(layer.head(features[0, 0]), expected)
    parameters = list(model.parameters())
    assert sum(p is model.decoder.embedding.weight for p in parameters) == 1


def test_softmax_layer_keeps_the_state_dict_keys_of_earlier_checkpoints():
    model = _model(output_layer="softmax")
    assert isinstance(model.decoder.output, SoftmaxOutput)
    keys = {key for key in model.state_dict() if key.startswith("decoder.output") or key.startswith("decoder.bridge")}
    assert keys == {"decoder.output.weight", "decoder.output.bias"}
    tied = _model(output_layer="softmax", tie=True)
    keys = {key for key in tied.state_dict() if key.startswith("decoder.output") or key.startswith("decoder.bridge")}
    assert keys == {"decoder.output.weight", "decoder.output.bias", "decoder.bridge.weight", "decoder.bridge.bias"}


def test_a_config_saved_before_the_output_layer_existed_loads_as_softmax(tmp_path):
    path = tmp_path / "config.toml"
    path.write_text('[model]\nlatent_dim = 8\ntie_embeddings = false\n')  # no output_layer key
    assert load_config(path).model.output_layer == "softmax"


@pytest.mark.parametrize(
    "overrides, message",
    [
        (["model.output_layer=adaptive", "model.adaptive_cutoffs=30,10"], "model.adaptive_cutoffs"),
        (["model.adaptive_cutoffs=0,10"], "model.adaptive_cutoffs"),
        (["model.adaptive_cutoffs=ten"], "model.adaptive_cutoffs=ten': expected comma-separated integers"),
        (["model.adaptive_div_value=0.5"], "model.adaptive_div_value"),
        (["model.output_layer=hierarchical"], "'hierarchical' is not one of softmax, adaptive"),
    ],
)
def test_bad_output_layer_settings_are_one_line_errors(overrides, message):
    with pytest.raises(SeqVAEError, match=message):
        load_config(None, overrides)


def test_cutoffs_beyond_the_vocabulary_are_refused_when_the_model_is_built():
    config = load_config(None, ["model.output_layer=adaptive", "model.adaptive_cutoffs=2000,6000"])
    with pytest.raises(SeqVAEError, match=r"model.adaptive_cutoffs=\[2000, 6000\]: every cutoff must be below the vocabulary size 60"):
        build_model(config.model, vocab_size=60)
    config = load_config(None, ["model.output_layer=adaptive", "model.adaptive_cutoffs=10,20,30,40", "model.hidden_dim=16", "model.adaptive_div_value=4"])
    with pytest.raises(SeqVAEError, match="model.adaptive_div_value=4.0: the last of 4 tail clusters"):
        build_model(config.model, vocab_size=60)


def test_cutoffs_read_from_toml_as_a_list_of_integers(tmp_path):
    path = tmp_path / "config.toml"
    path.write_text('[model]\noutput_layer = "adaptive"\nadaptive_cutoffs = [100, 500]\n')
    assert load_config(path).model.adaptive_cutoffs == (100, 500)
    path.write_text('[model]\nadaptive_cutoffs = ["100"]\n')
    with pytest.raises(SeqVAEError, match="expected list of integers"):
        load_config(path)


def test_scoring_without_gradients_in_blocks_equals_the_whole_computation(monkeypatch):
    import seqvae.models.output_layer as output_layer

    model = _model(output_layer="softmax")
    batch = _batch(seed=2)
    z = torch.randn(4, 3)
    whole = model.decoder.sequence_nll(batch.inputs, z, batch.targets, batch.mask)  # with gradients: one block
    monkeypatch.setattr(output_layer, "SCORING_BYTES", 4 * VOCAB * 3)  # three positions a block
    with torch.no_grad():
        blocked = model.decoder.sequence_nll(batch.inputs, z, batch.targets, batch.mask)
    torch.testing.assert_close(blocked, whole.detach(), rtol=1e-6, atol=1e-5)


def test_tail_rows_are_padded_to_few_counts_and_the_copies_change_nothing(monkeypatch):
    """On the CPU under bf16 autocast each tail cluster's rows are padded (seqvae.models.output_layer
    .few_row_counts: oneDNN builds a kernel per new shape); the copies' scores are cut off, so
    the log-probabilities and every gradient equal those of the unpadded computation."""
    from seqvae.models import output_layer

    counts = {output_layer.few_row_counts(torch.arange(n)).numel() for n in range(1, 2049)}
    assert len(counts) <= 120  # against 2,048 shapes unpadded
    for n in (1, 15, 16, 17, 100, 333, 1000, 2047):
        padded = output_layer.few_row_counts(torch.arange(5, 5 + n))
        assert n <= padded.numel() <= max(n + 15, n * 9 // 8) and padded[:n].tolist() == list(range(5, 5 + n))
        assert set(padded[n:].tolist()) <= {5}
    torch.manual_seed(0)
    layer = AdaptiveOutput(16, 50, cutoffs=[10, 30])
    features, targets = torch.randn(4, 9, 16), torch.randint(0, 50, (4, 9))

    def scored_and_grads():
        layer.zero_grad()
        leaf = features.clone().requires_grad_(True)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            scored = layer.token_log_prob(leaf, targets)
        scored.sum().backward()
        return scored.detach(), [leaf.grad.clone()] + [p.grad.clone() for p in layer.parameters()]

    padding, seen = output_layer.few_row_counts, []
    monkeypatch.setattr(output_layer, "few_row_counts", lambda rows: seen.append(rows.numel()) or padding(rows))
    padded_scores, padded_grads = scored_and_grads()
    assert len(seen) == 2 and all(count % 16 for count in seen)  # both clusters, padded (counts not already round)
    monkeypatch.setattr(output_layer, "few_row_counts", lambda rows: rows)
    plain_scores, plain_grads = scored_and_grads()
    torch.testing.assert_close(padded_scores, plain_scores)
    for padded_grad, plain_grad in zip(padded_grads, plain_grads):
        torch.testing.assert_close(padded_grad, plain_grad)

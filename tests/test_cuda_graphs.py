"""train.cuda_graphs on the CPU: the capture's contract is checked through seqvae.cuda_graphs's
eager stand-in (ReplayedEagerly, which reruns the recorded step at each replay and copies its
results into the captured outputs), so a step that bakes a value in at capture replays it stale
and the comparisons with eager training fail. The CUDA graphs themselves run in
benchmarks/cuda.sh on a GPU."""

import pytest
import torch

import seqvae.cuda_graphs as cuda_graphs
from seqvae.config import ModelConfig, ObjectiveConfig, load_config
from seqvae.cuda_graphs import ReplayedEagerly
from seqvae.data.batching import collate
from seqvae.errors import SeqVAEError
from seqvae.models.vae import build_model
from seqvae.training import Precision, graphed_step, train
from seqvae.training.step import forward_backward

from conftest import metrics, tiny_config, without_stops


@pytest.fixture
def stand_in(monkeypatch):
    monkeypatch.setattr(cuda_graphs, "_cpu_stand_in", True)


def _weights(run_dir, name="last"):
    return torch.load(run_dir / "checkpoints" / f"{name}.pt", weights_only=True)["model"]


def _same_runs(first, second):
    for key, value in _weights(first).items():
        assert torch.equal(value, _weights(second)[key]), key
    assert without_stops(first) == without_stops(second)


MODELS = {
    "lstm": ({}, {}),
    "per-dimension free bits": ({}, {"free_bits": "per_dimension", "free_bits_lambda": 0.3}),
    "weight drop": ({"weight_drop": 0.3}, {}),
    "bn-vae": ({"posterior": "batchnorm", "posterior_gamma": 0.6}, {}),
    "iaf": ({"flow": "iaf", "flow_steps": 2, "flow_hidden": 8}, {}),
    "transformer": (
        {"encoder": "transformer", "decoder": "transformer", "injection": ["memory"], "num_heads": 2, "ff_dim": 32}, {}
    ),
    "language model": ({"latent_dim": 0}, {}),
}


@pytest.mark.parametrize("name", list(MODELS))
def test_graphed_training_equals_eager_training(tiny_corpus, tmp_path, stand_in, name):
    """Replayed steps (width 1: the batches' own shapes) draw the same noise and give bit-identical
    weights and metrics: the KL weight (annealed every step here), word dropout, the batch and
    BatchNorm's running statistics all reach the replays, and capturing changes nothing."""
    model, objective = MODELS[name]
    settings = {"model": {"dropout": 0.3, **model}, "objective": objective}
    eager = tiny_config(tiny_corpus, tmp_path / "eager", **settings)
    train(eager, progress=False)
    graphed = tiny_config(tiny_corpus, tmp_path / "graphed", **settings, train={"cuda_graphs": True, "cuda_graph_width": 1})
    train(graphed, progress=False)
    _same_runs(tmp_path / "eager", tmp_path / "graphed")
    assert len([r for r in metrics(tmp_path / "graphed") if r["split"] == "train"]) > 3


def test_graphed_run_resumes_exactly(tiny_corpus, tmp_path, stand_in):
    """Killed and resumed (which captures every shape again), a graphed run with padded widths
    ends where the uninterrupted graphed run does."""
    settings = {"train": {"epochs": 2, "checkpoint_every": 4, "log_every": 3, "cuda_graphs": True}}
    train(tiny_config(tiny_corpus, tmp_path / "whole", **settings), progress=False)
    parts = {**settings, "train": {**settings["train"], "max_steps": 26}}
    assert train(tiny_config(tiny_corpus, tmp_path / "parts", **parts), progress=False).step == 26
    resumed = train(tiny_config(tiny_corpus, tmp_path / "parts", **settings), resume=True, progress=False)
    assert resumed.resumed_from_step == 26 and resumed.finished
    _same_runs(tmp_path / "whole", tmp_path / "parts")


def _batches(count=6, seed=0):
    generator = torch.Generator().manual_seed(seed)
    batches = []
    for _ in range(count):
        lengths = torch.randint(1, 14, (5,), generator=generator).tolist()
        batches.append(collate([torch.randint(5, 40, (n,), generator=generator).tolist() for n in lengths]))
    return batches


PADDED = {
    "lstm": {},
    "lstm, add injection": {"injection": ["initial_state", "add"]},
    "transformer mean pooling": {
        "encoder": "transformer", "decoder": "transformer", "injection": ["memory"], "num_heads": 2, "ff_dim": 32,
    },
    "transformer summary token, prefix": {
        "encoder": "transformer", "decoder": "transformer", "num_heads": 2, "ff_dim": 32,
        "pooling": "summary_token", "injection": ["prefix"],
    },
}


@pytest.mark.parametrize("name", list(PADDED))
def test_padding_to_the_width_multiple_changes_neither_loss_nor_gradients(name):
    """A batch padded up to the width multiple gives the eager step's figures and gradients (the
    same z: eps has the batch's shape whatever its width; no dropout)."""
    torch.manual_seed(0)
    model = build_model(ModelConfig(embedding_dim=12, hidden_dim=16, latent_dim=4, **PADDED[name]), vocab_size=40)
    model.train()
    objective = ObjectiveConfig(free_bits="per_dimension", free_bits_lambda=0.2)
    precision = Precision("fp32", torch.device("cpu"))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    graphs = graphed_step(model, optimizer, objective=objective, precision=precision, width_multiple=8, capture=ReplayedEagerly())
    padded_somewhere = False
    for batch in _batches():
        padded_somewhere |= graphs.shape(batch)[1] != batch.inputs.shape[1]
        torch.manual_seed(1)
        eager = forward_backward(model, optimizer, batch, kl_weight=0.7, objective=objective, precision=precision)
        expected = [p.grad.clone() for p in model.parameters()]
        torch.manual_seed(1)
        replayed = graphs.forward_backward(batch, 0.7)
        torch.testing.assert_close(replayed.figures, eager.figures, rtol=1e-5, atol=1e-5)
        for parameter, gradient in zip(model.parameters(), expected):
            torch.testing.assert_close(parameter.grad, gradient, rtol=1e-4, atol=1e-6)
    assert padded_somewhere


def test_one_capture_per_batch_shape():
    """A graph per (sentences, padded width); a shape seen again replays without capturing."""
    torch.manual_seed(0)
    model = build_model(ModelConfig(embedding_dim=12, hidden_dim=16, latent_dim=4), vocab_size=40)
    capture = ReplayedEagerly()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    precision = Precision("fp32", torch.device("cpu"))
    graphs = graphed_step(model, optimizer, objective=ObjectiveConfig(), precision=precision, width_multiple=4, capture=capture)
    batches = _batches(count=12)
    for batch in batches:
        graphs.forward_backward(batch, 1.0)
    shapes = {(b.inputs.shape[0], -(-b.inputs.shape[1] // 4) * 4) for b in batches}
    assert set(graphs.graphs) == shapes and capture.captures == len(shapes) < len(batches)


@pytest.mark.parametrize(
    "sections, named",
    [
        ({}, "needs a CUDA device"),
        ({"model": {"output_layer": "adaptive", "adaptive_cutoffs": [20, 40]}}, "model.output_layer=softmax"),
        ({"model": {"bidirectional": True}}, "bidirectional"),
        ({"train": {"aggressive": True}}, "train.aggressive"),
        ({"objective": {"free_bits": "mdr", "free_bits_lambda": 1.0}}, "mdr"),
    ],
)
def test_what_cuda_graphs_cannot_capture_is_refused_in_one_line(tiny_corpus, tmp_path, monkeypatch, sections, named):
    if sections:
        monkeypatch.setattr(cuda_graphs, "_cpu_stand_in", True)
    train_section = {"cuda_graphs": True, **sections.pop("train", {})}
    config = tiny_config(tiny_corpus, tmp_path / "run", train=train_section, **sections)
    with pytest.raises(SeqVAEError) as raised:
        train(config, progress=False)
    message = str(raised.value)
    assert message.startswith("train.cuda_graphs: ") and named in message and "\n" not in message
    assert not (tmp_path / "run").exists()


def test_an_eager_run_goes_on_with_cuda_graphs(tiny_corpus, tmp_path, stand_in):
    """train.cuda_graphs may change on resume (a CPU run continued on a GPU): the run finishes and
    its saved config says graphs from then on."""
    settings = {"train": {"epochs": 2, "checkpoint_every": 4}}
    stopped = {"train": {**settings["train"], "max_steps": 10}}
    train(tiny_config(tiny_corpus, tmp_path / "run", **stopped), progress=False)
    graphed = {"train": {**settings["train"], "cuda_graphs": True, "cuda_graph_width": 4}}
    resumed = train(tiny_config(tiny_corpus, tmp_path / "run", **graphed), resume=True, progress=False)
    assert resumed.resumed_from_step == 10 and resumed.finished
    assert load_config(tmp_path / "run" / "config.toml").train.cuda_graphs


def test_graphed_training_through_decays_and_returns_to_best_equals_eager(tiny_corpus, tmp_path, monkeypatch, stand_in):
    """A learning-rate decay that copies best.pt's weights back (into the same parameter tensors the
    graphs read) and reloads Adam's state needs no new capture: graphed equals eager throughout."""
    from seqvae.training.trainer import Trainer

    values = {1: 5.0, 2: 4.0, 3: 4.5, 4: 4.6, 5: 4.7}
    monkeypatch.setattr(Trainer, "selection_value", lambda self, valid: values[self.state.epoch])
    settings = {"epochs": 5, "learning_rate": 0.01, "lr_decay": "plateau", "lr_patience": 0, "lr_decay_reload_best": True}
    train(tiny_config(tiny_corpus, tmp_path / "eager", train=settings), progress=False)
    graphed = {**settings, "cuda_graphs": True, "cuda_graph_width": 1}
    train(tiny_config(tiny_corpus, tmp_path / "graphed", train=graphed), progress=False)
    last = torch.load(tmp_path / "graphed" / "checkpoints" / "last.pt", weights_only=True)
    assert last["lr_decays"] == 3
    _same_runs(tmp_path / "eager", tmp_path / "graphed")

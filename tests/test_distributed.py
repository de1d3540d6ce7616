"""Data-parallel training (seqvae.distributed): processes spawned here with torchrun's environment
variables and the gloo backend, each run bounded in time."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from conftest import tiny_config
from seqvae.config import config_to_toml
from seqvae.data.tokenizers import load_tokenizer
from seqvae.models.vae import build_model

LIMIT = 240
"""Seconds a spawned training may take before the test fails (they take a few)."""


def _free_port() -> int:
    with socket.socket() as handle:
        handle.bind(("127.0.0.1", 0))
        return handle.getsockname()[1]


def _write_config(config, path: Path) -> Path:
    path.write_text(config_to_toml(config))
    return path


def _start(
    world_size: int, config_path: Path | None, overrides: list[str], cwds: list[Path], *extra: str, command: list[str] | None = None
) -> list[subprocess.Popen]:
    """``python -m seqvae train CONFIG`` (or ``command``) as ``world_size`` ranks, as torchrun
    would start them (one thread each), rank r in cwds[r]."""
    port = _free_port()
    processes = []
    for rank in range(world_size):
        env = dict(
            os.environ,
            RANK=str(rank),
            WORLD_SIZE=str(world_size),
            LOCAL_RANK=str(rank),
            LOCAL_WORLD_SIZE=str(world_size),
            MASTER_ADDR="127.0.0.1",
            MASTER_PORT=str(port),
            OMP_NUM_THREADS="1",
        )
        cwds[rank].mkdir(parents=True, exist_ok=True)
        argv = command or [sys.executable, "-m", "seqvae", "train", str(config_path), "--no-progress"]
        argv = [*argv, *overrides, "run.threads=1", *extra]
        processes.append(subprocess.Popen(argv, cwd=cwds[rank], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
    return processes


def _finish(processes: list[subprocess.Popen]) -> list[tuple[int, str, str]]:
    deadline = time.monotonic() + LIMIT
    results = []
    try:
        for process in processes:
            out, err = process.communicate(timeout=max(1.0, deadline - time.monotonic()))
            results.append((process.returncode, out, err))
    finally:
        for process in processes:
            if process.poll() is None:
                process.kill()
                process.communicate()
    return results


def _train(
    world_size: int, config_path: Path | None, overrides: list[str], cwds: list[Path], *extra: str, command: list[str] | None = None
) -> list[tuple[int, str, str]]:
    results = _finish(_start(world_size, config_path, overrides, cwds, *extra, command=command))
    for rank, (code, _, err) in enumerate(results):
        assert code == 0, f"rank {rank}: {err}"
    return results


def _train_here(config_path: Path, run_dir: Path, overrides: list[str] = ()) -> Path:
    """A run trained in this test process, not under torchrun (whose single process draws its
    noise as the ranks do, seqvae.distributed); returns its run directory."""
    from seqvae.config import load_config
    from seqvae.training import train

    train(load_config(config_path, [*overrides, f"run.dir={run_dir}"]), progress=False)
    return run_dir


def _weights(run_dir: Path, name: str = "last.pt") -> dict[str, torch.Tensor]:
    return torch.load(run_dir / "checkpoints" / name, weights_only=False)["model"]


def _largest_difference(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> float:
    assert a.keys() == b.keys()
    return max(float((a[key].double() - b[key].double()).abs().max()) for key in a if a[key].is_floating_point())


# Each case: the config sections of a method whose step must not depend on the number of ranks.
METHODS = {
    "per-dimension free bits": {"objective": {"free_bits": "per_dimension", "free_bits_lambda": 0.3}},
    "adaptive softmax": {"model": {"output_layer": "adaptive", "adaptive_cutoffs": [20, 60]}},
    "minimum desired rate": {"objective": {"free_bits": "mdr", "free_bits_lambda": 2.0}},
    "language model": {"model": {"latent_dim": 0}, "objective": {"word_dropout": 0.0}},
    "iaf flow": {"model": {"flow": "iaf", "flow_steps": 2, "flow_hidden": 16}},
}


EVERY_METHOD = """
import sys
from pathlib import Path

from seqvae.config import load_config
from seqvae.distributed import leave
from seqvae.training import train

configs = [Path(argument) for argument in sys.argv[1:] if argument.endswith(".toml")]
overrides = [argument for argument in sys.argv[1:] if not argument.endswith(".toml")]
for path in configs:
    train(load_config(path, [*overrides, f"run.dir=run-{path.stem}"]), progress=False)
leave()
"""
"""Each rank trains the configs it is given in turn (with the overrides given beside them): one process (and one torch import, one
process group) per rank for all of them, instead of one per method."""


def _one_update_config(tiny_corpus, method: str):
    sections = {
        "annealing": {"schedule": "constant", "beta": 1.0},
        "train": {"optimizer": "sgd", "learning_rate": 0.5, "max_steps": 1, "validation": "elbo"},
    }
    for name, values in METHODS[method].items():
        sections[name] = {**sections.get(name, {}), **values}
    return tiny_config(tiny_corpus, Path("run"), **sections)


OTHER_RUNS = {
    "bn-vae": {  # one update: BN-VAE's step is not that of one process (its own test below)
        "model": {"posterior": "batchnorm", "posterior_gamma": 0.7},
        "train": {"optimizer": "sgd", "learning_rate": 0.5, "validation": "elbo", "max_steps": 1},
    },
    "aggressive": {  # a whole epoch whose last batch has one sentence, with aggressive training
        "train": {"optimizer": "sgd", "learning_rate": 0.2, "batch_size": 23, "epochs": 1, "aggressive": True,
                  "aggressive_max_inner_steps": 6, "aggressive_check_every": 3, "validation": "elbo"},
    },
}
"""Runs by 1 and 2 ranks beside the methods' one update, in the same rank processes."""


@pytest.fixture(scope="module")
def rank_runs(tiny_corpus, tmp_path_factory):
    """Every method of METHODS trained for one update by 1, 2 and 3 ranks, and the OTHER_RUNS by 1
    and 2 ranks (torchrun's environment, one process per rank, however many ranks): ({world size:
    {name: run directory of rank 0}}, the tokenizer)."""
    folder = tmp_path_factory.mktemp("rank-runs")
    configs = {method: _one_update_config(tiny_corpus, method) for method in METHODS}
    configs.update({name: tiny_config(tiny_corpus, Path("run"), **sections) for name, sections in OTHER_RUNS.items()})
    paths = {name: _write_config(config, folder / f"c{index}.toml") for index, (name, config) in enumerate(configs.items())}
    script = folder / "every_method.py"
    script.write_text(EVERY_METHOD)
    runs = {}
    for world_size in (1, 2, 3):
        names = list(configs) if world_size < 3 else list(METHODS)
        cwds = [folder / f"w{world_size}-rank{rank}" for rank in range(world_size)]
        _train(world_size, None, [], cwds, command=[sys.executable, str(script), *(str(paths[name]) for name in names)])
        runs[world_size] = {name: cwds[0] / f"run-{paths[name].stem}" for name in names}
    return runs, load_tokenizer(runs[1][next(iter(METHODS))])


@pytest.mark.parametrize("method", list(METHODS), ids=list(METHODS))
def test_one_update_of_two_and_three_ranks_equals_one_process_with_the_whole_batch(tiny_corpus, rank_runs, method):
    """The same global batch of 16 sentences split over 2 ranks (8 + 8) and 3 ranks (6 + 5 + 5)
    gives the parameters of one process after one update (plain SGD at a large rate, so the
    update is large and any difference in the gradient shows)."""
    config = _one_update_config(tiny_corpus, method)
    trained, tokenizer = rank_runs
    runs = {world_size: _weights(trained[world_size][method]) for world_size in (1, 2, 3)}
    torch.manual_seed(config.run.seed)
    initial = build_model(config.model, vocab_size=tokenizer.vocab_size).state_dict()
    assert _largest_difference(runs[1], initial) > 1e-2  # the update moved the weights
    assert _largest_difference(runs[2], runs[1]) < 1e-6
    assert _largest_difference(runs[3], runs[1]) < 1e-6


def test_an_epoch_with_a_one_sentence_batch_and_aggressive_training_matches_one_process(rank_runs):
    """300 sentences in batches of 23 leave one batch of a single sentence: the second rank runs
    a stand-in row at weight 0. Aggressive training's inner loop decides on the global loss, so
    every rank takes the same number of encoder steps."""
    runs = {world_size: rank_runs[0][world_size]["aggressive"] for world_size in (1, 2)}
    assert _largest_difference(_weights(runs[2]), _weights(runs[1])) < 1e-5
    one, two = ([json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()] for run in (runs[1], runs[2]))
    assert [record["step"] for record in one] == [record["step"] for record in two]
    inner = [record["inner_steps"] for record in two if "inner_steps" in record]
    assert inner == [record["inner_steps"] for record in one if "inner_steps" in record] and max(inner) > 1


def _steps_logged(run_dir: Path) -> int:
    path = run_dir / "metrics.jsonl"
    if not path.is_file():
        return 0
    steps = [json.loads(line)["step"] for line in path.read_text().splitlines() if line.strip()]
    return max(steps, default=0)


def test_a_two_rank_run_stopped_by_sigterm_and_resumed_ends_bit_identical(tiny_corpus, tmp_path):
    """SIGTERM reaches both ranks (as torchrun forwards it); they agree on a step, rank 0 saves it,
    both exit with 130; resumed, and resumed again after one rank was killed, the run ends with the
    weights of an uninterrupted one, bit for bit. Only rank 0 writes: rank 1 runs in a folder of its own, which stays empty.
    The interrupted run also writes TensorBoard curves (which must not change its weights): each
    logged step shows once, though two sittings logged steps past their last checkpoint."""
    config = tiny_config(
        tiny_corpus,
        Path("run"),
        model={"embedding_dim": 64, "hidden_dim": 160, "dropout": 0.1},  # big enough that a step takes a while
        train={"epochs": 2, "log_every": 1, "validation": "elbo", "checkpoint_every": 7},
    )
    config_path = _write_config(config, tmp_path / "config.toml")
    whole = [tmp_path / "whole-rank0", tmp_path / "whole-rank1"]
    _train(2, config_path, [], whole)

    cut = [tmp_path / "cut-rank0", tmp_path / "cut-rank1"]
    watched = ["run.tensorboard=true"]
    processes = _start(2, config_path, watched, cut)
    deadline = time.monotonic() + LIMIT
    while _steps_logged(cut[0] / "run") < 5 and time.monotonic() < deadline and processes[0].poll() is None:
        time.sleep(0.01)
    for process in processes:
        process.send_signal(signal.SIGTERM)
    results = _finish(processes)
    assert [code for code, _, _ in results] == [130, 130], results
    assert "SIGTERM: training stopped at step" in results[0][2] and "--resume" in results[0][2]
    assert results[1][1] == "" and results[1][2] == ""  # rank 1 prints nothing
    stopped = torch.load(cut[0] / "run" / "checkpoints" / "last.pt", weights_only=False)
    total = 2 * 19  # 300 sentences in batches of 16, two epochs
    assert 5 <= stopped["step"] < total and stopped["world_size"] == 2 and len(stopped["rng_ranks"]) == 2

    # resumed, then one rank killed mid-epoch: the other stops within seconds with one line, not a
    # hang on a collective or a traceback, and the run resumes all the same
    processes = _start(2, config_path, watched, cut, "--resume")
    while _steps_logged(cut[0] / "run") < stopped["step"] + 3 and time.monotonic() < deadline and processes[0].poll() is None:
        time.sleep(0.01)
    processes[1].kill()
    killed = time.monotonic()
    (code, _, err), _ = _finish(processes)
    assert time.monotonic() - killed < 60
    assert code == 2 and "Traceback" not in err, err
    assert err.strip().splitlines()[-1].startswith("seqvae: error: ") and "lost another process of the training" in err

    _train(2, config_path, watched, cut, "--resume")
    assert torch.load(cut[0] / "run" / "checkpoints" / "last.pt", weights_only=False)["step"] == total
    for name in ("last.pt", "best.pt"):
        assert _largest_difference(_weights(cut[0] / "run", name), _weights(whole[0] / "run", name)) == 0.0
    assert list(cut[1].iterdir()) == [] and list(whole[1].iterdir()) == []  # rank 1 wrote nothing
    written = {path.name for path in (cut[0] / "run").iterdir()}
    assert {"config.toml", "tokenizer.json", "metrics.jsonl", "data.json", "checkpoints"} <= written
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(cut[0] / "run" / "tensorboard"), size_guidance={"scalars": 0})
    events.Reload()
    assert [event.step for event in events.Scalars("train/loss")] == list(range(1, total + 1))  # log_every 1
    assert not (whole[0] / "run" / "tensorboard").exists()  # the key's default writes nothing


def test_a_two_rank_checkpoint_resumes_in_one_process_and_says_it_is_not_bit_exact(tiny_corpus, tmp_path):
    config = tiny_config(tiny_corpus, Path("run"), train={"epochs": 2, "validation": "elbo"})
    config_path = _write_config(config, tmp_path / "config.toml")
    two = [tmp_path / "rank0", tmp_path / "rank1"]
    _train(2, config_path, ["train.max_steps=10"], two)
    (code, out, err), = _train(1, config_path, [], [two[0]], "--resume")
    assert "resumed with 1 processes a run checkpointed with 2" in err and "not bit-exact" in err
    whole = [tmp_path / "whole0", tmp_path / "whole1"]
    _train(2, config_path, [], whole)
    # no model.dropout here: only the order of floating-point sums differs
    assert _largest_difference(_weights(two[0] / "run"), _weights(whole[0] / "run")) < 1e-4


def test_an_error_on_rank_zero_stops_every_rank_with_one_message(tiny_corpus, tmp_path):
    """The run directory exists (no --resume): rank 0 refuses, the other rank stops too, quietly."""
    config = tiny_config(tiny_corpus, Path("run"), train={"epochs": 1, "validation": "elbo"})
    config_path = _write_config(config, tmp_path / "config.toml")
    cwds = [tmp_path / "rank0", tmp_path / "rank1"]
    _train_here(config_path, cwds[0] / "run", ["train.max_steps=2"])  # the run directory rank 0 finds
    results = _finish(_start(2, config_path, [], cwds))
    assert [code for code, _, _ in results] == [2, 2]
    assert results[0][2].strip().splitlines() == [
        "seqvae: error: run: run directory exists; pass --resume to continue it or --overwrite to replace it"
    ]
    assert results[1][2] == ""


def test_bn_vae_trains_on_two_ranks_with_each_ranks_statistics(rank_runs):
    """BN-VAE on the CPU normalises each rank's rows with their own statistics (SyncBatchNorm needs
    CUDA): it trains, and its step differs from one process's, unlike every method above."""
    runs = {world_size: _weights(rank_runs[0][world_size]["bn-vae"]) for world_size in (1, 2)}
    assert all(bool(torch.isfinite(tensor).all()) for tensor in runs[2].values() if tensor.is_floating_point())
    assert _largest_difference(runs[2], runs[1]) > 1e-4


def test_other_commands_refuse_to_run_under_torchrun(tmp_path):
    done = subprocess.run(
        [sys.executable, "-m", "seqvae", "eval", str(tmp_path)], env=dict(os.environ, WORLD_SIZE="2", RANK="0"),
        capture_output=True, text=True, timeout=60,
    )
    assert done.returncode == 2
    assert done.stderr.strip() == "seqvae: error: seqvae eval: only train runs under torchrun (WORLD_SIZE=2); run eval as one process"


def test_fp16_is_refused_on_the_cpu_and_bf16_trains(tiny_corpus, tmp_path):
    from seqvae.errors import SeqVAEError
    from seqvae.training import train

    config = tiny_config(tiny_corpus, tmp_path / "run", train={"precision": "fp16"})
    with pytest.raises(SeqVAEError, match=r"^train.precision=fp16: fp16 with loss scaling is for CUDA"):
        train(config, progress=False)
    assert not (tmp_path / "run").exists()
    results = {}
    for precision in ("fp32", "bf16"):
        config = tiny_config(
            tiny_corpus, tmp_path / precision, train={"precision": precision, "max_steps": 40, "validation": "elbo"}
        )
        results[precision] = train(config, progress=False)
    # the same run in bf16 arithmetic: close to fp32, not equal (the weights stay fp32)
    assert results["bf16"].valid["elbo"] != results["fp32"].valid["elbo"]
    assert results["bf16"].valid["elbo"] == pytest.approx(results["fp32"].valid["elbo"], rel=0.02)
    weights = torch.load(tmp_path / "bf16" / "checkpoints" / "last.pt", weights_only=False)["model"]
    assert all(tensor.dtype in (torch.float32, torch.int64) for tensor in weights.values())


def test_the_output_layer_scores_as_standard_mixed_precision_under_autocast():
    """Under a bf16 autocast (the CPU's, standing in for CUDA's) the decoder's features are bf16;
    the projections run in bf16 and the log-softmax in fp32: the log-probabilities come out fp32,
    equal to an fp32 log-softmax of the bf16 logits, within bf16's rounding of the fp32 layer's,
    and gradients reach the weights. The full distribution (decoding) stays all fp32."""
    from seqvae.models.output_layer import AdaptiveOutput, SoftmaxOutput

    torch.manual_seed(0)
    features, targets = torch.randn(3, 5, 16), torch.randint(0, 50, (3, 5))
    for layer in (SoftmaxOutput(16, 50), AdaptiveOutput(16, 50, cutoffs=[10, 30])):
        with torch.autocast("cpu", dtype=torch.bfloat16):
            low = torch.nn.functional.linear(features, torch.eye(16))  # bf16, as autocast leaves a decoder's output
            scored = layer.token_log_prob(low, targets)
            full = layer.log_prob(low)
        assert low.dtype == torch.bfloat16 and scored.dtype == torch.float32 and full.dtype == torch.float32
        exact = layer.token_log_prob(low.float(), targets)
        torch.testing.assert_close(full.gather(-1, targets.unsqueeze(-1)).squeeze(-1), exact)
        assert 0 < (scored - exact).abs().max() < 0.05  # the bf16 projection's rounding, no more
        if isinstance(layer, SoftmaxOutput):
            logits = torch.nn.functional.linear(low, layer.weight.bfloat16(), layer.bias.bfloat16())
            reference = -torch.nn.functional.cross_entropy(logits.float().reshape(-1, 50), targets.reshape(-1), reduction="none")
            torch.testing.assert_close(scored.reshape(-1), reference)
        scored.sum().backward()
        assert all(parameter.grad is not None and parameter.grad.dtype == torch.float32
                   for parameter in layer.parameters() if parameter.requires_grad)


class _RecordingRanks:
    """A stand-in for W ranks inside one process: ``gather`` hands back the parts that the passes
    of the other ranks recorded (run them first), so each rank's share of the work can be checked
    against one process's."""

    def __init__(self, rank: int, size: int, parts: dict[int, object]) -> None:
        self.rank, self.size, self.parts = rank, size, parts

    def gather(self, value):
        self.parts[self.rank] = value
        return [self.parts.get(rank, []) for rank in range(self.size)]


@pytest.mark.parametrize("latent_dim", [4, 0], ids=["vae", "language model"])
@pytest.mark.parametrize("size", [2, 3])
def test_validation_shared_among_ranks_gives_one_process_figures_bit_for_bit(tiny_corpus, tmp_path, size, latent_dim):
    from seqvae.data.corpus import load_corpus
    from seqvae.data.tokenizers import build_tokenizer
    from seqvae.evaluation import evaluate_elbo, evaluate_split
    from seqvae.training import prepare_data

    config = tiny_config(tiny_corpus, tmp_path, model={"latent_dim": latent_dim}, train={"eval_batch_size": 7})
    corpus = load_corpus(config.data)
    data = prepare_data(config, corpus, build_tokenizer(config.tokenizer, corpus.splits["train"]))
    torch.manual_seed(0)
    model = build_model(config.model, vocab_size=data.tokenizer.vocab_size)
    batches = list(data.batches("valid", 7))  # 60 sentences: 9 batches, the last of 4

    def generator():
        return torch.Generator().manual_seed(11)

    alone = evaluate_elbo(model, batches, generator=generator())
    parts: dict[int, object] = {}
    for rank in reversed(range(size)):  # rank 0 last: its gather then holds every rank's part
        shared = evaluate_elbo(model, batches, generator=generator(), world=_RecordingRanks(rank, size, parts))
    assert len(parts[1]) < len(batches)  # each rank scored only its share
    assert shared == alone

    # every measure of seqvae eval (IW bound, BLEU, MI, prior samples), the trainer's "full" validation
    def full(world=None):
        return evaluate_split(model, batches, data.tokenizer, iw_samples=5, prior_samples=4, seed=3, world=world)

    alone = full()
    parts = {}
    for rank in reversed(range(size)):
        shared = full(_RecordingRanks(rank, size, parts))
    assert len(parts[1]) < len(batches)
    assert shared == alone and ("nll_iw" in alone or latent_dim == 0)


def test_the_ptb_recipe_on_two_ranks_writes_the_evaluation_of_one_process(tiny_corpus, tmp_path):
    """Training, then the final evaluation shared by the ranks: the row rank 0 writes holds the
    figures that one process measures on the same checkpoint, bit for bit."""
    from seqvae import load_run

    data = tmp_path / "ptb"
    data.mkdir()
    for split in ("train", "valid", "test"):
        lines = tiny_corpus[split].read_text().splitlines()[:80]
        (data / f"ptb.{split}.txt").write_text("".join(f" {line} \n" for line in lines))
    recipe = [sys.executable, str(Path(__file__).resolve().parents[1] / "recipes" / "ptb" / "run.py")]
    overrides = [
        "--data-dir", str(data), "--iw-samples", "7", "--eval", "test", "--results", "row.json", "train.epochs=1",
        "model.hidden_dim=16", "model.embedding_dim=8", "model.latent_dim=4", "model.adaptive_cutoffs=40,100",
        f"run.dir={tmp_path / 'run'}",
    ]
    cwds = [tmp_path / "rank0", tmp_path / "rank1"]
    results = _train(2, None, overrides, cwds, command=recipe)
    assert "written to row.json" in results[0][1] and results[1][1] == ""
    row = json.loads((cwds[0] / "row.json").read_text())
    alone = load_run(tmp_path / "run").evaluate("test", iw_samples=7)
    assert row["processes"] == 2 and row["iw_samples"] == 7
    assert {key: row[key] for key in alone if key != "warnings"} == {key: value for key, value in alone.items() if key != "warnings"}
    assert list(cwds[1].iterdir()) == []

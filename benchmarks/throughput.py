"""Training throughput of the seqvae LSTM VAE against a plain PyTorch LSTM language model.

What is measured
----------------
Tokens per second of *training steps*, where a batch's tokens are ``batch.num_tokens``: the
predicted tokens, i.e. every word plus one end-of-sentence per sentence (padding never counts).

1. **VAE**, once with each output layer (``softmax``: the full softmax; ``adaptive``: the
   adaptive softmax with the ``ModelConfig`` default cutoffs [2000, 6000] and div_value 4, or
   cutoffs at 1/5 and 3/5 of a vocabulary smaller than 6,000):
   exactly the step of ``seqvae.training.train`` with the default objective:
   ``seqvae.training.train_step`` itself (LSTM encoder, Gaussian posterior, reparametrised z,
   LSTM decoder with z injected as initial state and concatenated to every input, the output
   layer's target-only loss, ``elbo_loss`` with KL weight 1 and no free bits, backward,
   ``clip_grad_norm_(..., 5)``, Adam step), plus the ``float(loss)`` the training loop takes for
   its log. The models come from ``seqvae.models.vae.build_model`` with ``ModelConfig`` defaults
   apart from the sizes and the output layer.
   With ``--flow iaf`` (or ``planar``), a third VAE: the adaptive one with that flow on its
   posterior (``--flow-steps``, ``--flow-hidden``; the KL is then the Monte-Carlo estimate), so
   the cost of the flow is the ratio of the two adaptive VAEs measured in the same run.
   With ``--cuda-graphs``, the full-softmax VAE once more with ``train.cuda_graphs`` (its
   forward, ELBO and backward replayed from one CUDA graph per batch shape, widths padded to a
   multiple of ``--graph-width``; seqvae.cuda_graphs), reported against the eager floor (the
   target) and against the floor given the same capture (``lm_floor_graphed``).
2. **Floor**: a plain PyTorch LSTM language model of the same sizes, written here with no seqvae
   model code: ``nn.Embedding(V, E) -> nn.LSTM(E, H, batch_first=True) -> nn.Linear(H, V)``
   (a full softmax), reading ``batch.inputs`` and predicting ``batch.targets``; loss = token
   cross-entropy summed over real tokens (``batch.mask``) divided by the batch size; the same
   zero_grad, backward, clip 5, the same optimizer as training (``seqvae.training.build_optimizer``:
   Adam, lr 1e-3, fused on CPU and CUDA) and ``float(loss)``. It is what one LSTM language model
   costs, so the ratio VAE/floor shows what the encoder, the latent, the output layer and seqvae's
   code add on top (or, above 1, save).

How
---
The training split is tokenized with a word vocabulary (``WordTokenizer.build`` on the training
sentences), encoded with ``encode_split`` and cut into length-bucketed batches with
``bucketed_batches`` (seed, epoch 0, 50-batch pools as in training; later epochs are appended if
more batches are asked for). The first W + N batches are collated once with ``collate`` and moved
to the device *before* any timing, so the collate cost is excluded for both models; both models
see the same batch sequence. Each repeat runs the models in turn (floor, VAE softmax, VAE
adaptive, floor, ...): W untimed warm-up steps, then N timed steps. The median over R repeats
per model is reported, so slow drift on a shared machine hits every model alike. On CUDA,
``torch.cuda.synchronize`` brackets each timed region. The models keep training across repeats
(their state carries over). Threads: 2 by default (``--threads``).

Memory: on CPU the peak resident set size of the whole process (``resource.getrusage`` max RSS,
a high-water mark that never goes down) is reported after the setup and after each model's first
repeat; a model's own peak is hidden unless it exceeds the earlier ones'. On CUDA the peak
allocated GPU memory per model is reported as well.

No timing is asserted anywhere; absolute numbers depend on the machine and its load.

Usage (from the repository root)::

    python benchmarks/throughput.py                                         # synthetic corpus
    python benchmarks/throughput.py --data-dir ../shared/data/ptb --json    # PTB train split
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import json
import platform
import random
import resource
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from seqvae.config import ModelConfig, ObjectiveConfig, TrainConfig
from seqvae.cuda_graphs import CudaCapture, ReplayedEagerly, StepGraphs, pad_into, padded_shape, static_batch
from seqvae.data.batching import Batch, bucketed_batches, collate, encode_split
from seqvae.data.corpus import load_text_files
from seqvae.data.synthetic import DEFAULT_SIZES, write_corpus
from seqvae.precision import bf16_units, cpu_flags, cpu_model
from seqvae.data.tokenizers import WordTokenizer
from seqvae.models.vae import build_model
from seqvae.training import Precision, build_optimizer, graphed_step, train_step

LEARNING_RATE = TrainConfig().learning_rate  # 1e-3, as in training
GRAD_CLIP = 5.0
KL_WEIGHT = 1.0


def seed_everything(seed: int) -> None:
    random.seed(seed)
    torch.manual_seed(seed)
    if torch.cuda.is_available():
        torch.cuda.manual_seed_all(seed)


def max_rss_mib() -> float:
    """Peak resident set size of this process so far, in MiB (ru_maxrss: KiB on Linux, bytes on macOS)."""
    value = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return value / (1024 * 1024) if sys.platform == "darwin" else value / 1024


# ---------------------------------------------------------------------------------------------
# The floor: a plain LSTM language model, no seqvae model code.
# ---------------------------------------------------------------------------------------------


class LSTMLanguageModel(nn.Module):
    def __init__(self, vocab_size: int, embedding_dim: int, hidden_dim: int) -> None:
        super().__init__()
        self.embedding = nn.Embedding(vocab_size, embedding_dim)
        self.lstm = nn.LSTM(embedding_dim, hidden_dim, batch_first=True)
        self.output = nn.Linear(hidden_dim, vocab_size)

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        hidden, _ = self.lstm(self.embedding(inputs))  # (B, T, H)
        return self.output(hidden)  # (B, T, V)


class FloorStep:
    """One training step of the plain language model."""

    def __init__(self, model: LSTMLanguageModel, device: torch.device, precision: Precision) -> None:
        self.model = model
        self.optimizer = build_optimizer(model.parameters(), learning_rate=LEARNING_RATE, device=device)
        self.precision = precision

    def logits(self, batch: Batch) -> torch.Tensor:
        return self.model(batch.inputs)

    def loss(self, batch: Batch, *, cache: bool = True) -> torch.Tensor:
        with self.precision.autocast(cache=cache):
            logits = self.logits(batch)
        logits = logits.float()  # the loss in fp32, as seqvae's output layer computes it
        vocab = logits.shape[-1]
        token_nll = F.cross_entropy(logits.reshape(-1, vocab), batch.targets.reshape(-1), reduction="none")
        return (token_nll * batch.mask.reshape(-1)).sum() / batch.inputs.shape[0]

    def __call__(self, batch: Batch) -> float:
        loss = self.loss(batch)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        return self.update(loss)

    def update(self, loss: torch.Tensor) -> float:
        torch.nn.utils.clip_grad_norm_(self.model.parameters(), GRAD_CLIP)
        self.optimizer.step()
        return float(loss.detach())


def capture_for(device: torch.device):
    """CUDA graphs on CUDA; on the CPU seqvae's eager stand-in (a dry run of the code, no speed-up)."""
    return CudaCapture(device) if device.type == "cuda" else ReplayedEagerly()


class GraphedFloorStep(FloorStep):
    """The floor with the treatment ``train.cuda_graphs`` gives the VAE: its forward, loss and
    backward recorded once per (batch, width padded to a multiple of ``width_multiple``) with the
    same capture, then replayed; clipping, Adam and the loss read stay eager. So the ratio of the
    graphed VAE to this floor is the cost of the VAE's extra work once both are launch-free."""

    def __init__(self, model: LSTMLanguageModel, device: torch.device, precision: Precision, width_multiple: int) -> None:
        super().__init__(model, device, precision)
        self.width_multiple = width_multiple
        self.capture = capture_for(device)
        self.graphs: dict[tuple[int, int], tuple] = {}

    def __call__(self, batch: Batch) -> float:
        key = padded_shape(batch, self.width_multiple)
        if key not in self.graphs:
            static = static_batch(*key, batch)
            pad_into(static, batch)
            parameters = list(self.model.parameters())

            def run() -> list:
                for parameter in parameters:
                    parameter.grad = None
                loss = self.loss(static, cache=False)
                loss.backward()
                return [loss.detach(), *(parameter.grad for parameter in parameters)]

            replay, outputs = self.capture(run)
            self.graphs[key] = (static, replay, outputs)
        static, replay, (loss, *gradients) = self.graphs[key]
        pad_into(static, batch)
        replay()
        for parameter, gradient in zip(self.model.parameters(), gradients):
            parameter.grad = gradient
        return self.update(loss)


class VAEStep:
    """One step of seqvae.training.train: ``train_step`` with the default objective (no word
    dropout, no free bits), KL weight 1, clipping at 5, Adam."""

    description = "seqvae.training.train_step: model(batch) -> elbo_loss(beta=1) -> backward -> clip 5 -> Adam"
    graphs: StepGraphs | None = None

    def __init__(self, model: nn.Module, device: torch.device, precision: Precision) -> None:
        self.model = model
        self.optimizer = build_optimizer(model.parameters(), learning_rate=LEARNING_RATE, device=device)
        self.objective = ObjectiveConfig(free_bits="none")
        self.precision = precision

    def __call__(self, batch: Batch) -> float:
        terms = train_step(
            self.model, self.optimizer, batch, kl_weight=KL_WEIGHT, objective=self.objective, grad_clip=GRAD_CLIP,
            precision=self.precision, graphs=self.graphs,
        )
        return terms.loss


class GraphedVAEStep(VAEStep):
    """The same step with ``train.cuda_graphs``: forward, ELBO and backward replayed from
    seqvae.training.graphed_step, one graph per (batch, width padded to a multiple of
    ``width_multiple``)."""

    def __init__(self, model: nn.Module, device: torch.device, precision: Precision, width_multiple: int) -> None:
        super().__init__(model, device, precision)
        self.graphs = graphed_step(
            model, self.optimizer, objective=self.objective, precision=precision, width_multiple=width_multiple,
            capture=capture_for(device),
        )


# ---------------------------------------------------------------------------------------------
# Data
# ---------------------------------------------------------------------------------------------


def load_train_sentences(data_dir: str | None, seed: int) -> tuple[list[str], str]:
    """The training sentences and a description of where they came from."""
    if data_dir:
        path = Path(data_dir) / "ptb.train.txt"
        if not path.is_file():
            raise SystemExit(f"{path}: not found (--data-dir must hold ptb.train.txt)")
        corpus = load_text_files({"train": str(path)})
        return corpus.splits["train"], str(path)
    with tempfile.TemporaryDirectory(prefix="seqvae-bench-") as workdir:
        size = DEFAULT_SIZES["train"]
        paths = write_corpus(workdir, seed=seed, sizes={"train": size})
        corpus = load_text_files({"train": str(paths["train"])})
        return corpus.splits["train"], f"synthetic (seqvae.data.synthetic.write_corpus, seed {seed})"


def build_batches(sequences: list[list[int]], *, batch_size: int, count: int, seed: int) -> list[list[int]]:
    """The first ``count`` index batches of training order (epoch 0, then epoch 1, ...)."""
    lengths = [len(sequence) for sequence in sequences]
    pool_batches = TrainConfig().bucket_batches
    batches: list[list[int]] = []
    epoch = 0
    while len(batches) < count:
        batches.extend(bucketed_batches(lengths, batch_size=batch_size, seed=seed, epoch=epoch, pool_batches=pool_batches))
        epoch += 1
    return batches[:count]


def load_batches(
    data_dir: str | None, *, batch_size: int, count: int, seed: int, device: torch.device
) -> tuple[WordTokenizer, list[Batch], str, int]:
    """The word tokenizer of the training split, its first ``count`` batches of training order
    collated once and moved to ``device`` (so collate is excluded from every timing), where the
    sentences came from, and how many there are."""
    sentences, source = load_train_sentences(data_dir, seed)
    tokenizer = WordTokenizer.build(sentences)
    encoded = encode_split(tokenizer, sentences)
    index_batches = build_batches(encoded.sequences, batch_size=batch_size, count=count, seed=seed)
    batches = [collate([encoded.sequences[i] for i in indices]).to(device) for indices in index_batches]
    return tokenizer, batches, source, len(encoded.sequences)


# ---------------------------------------------------------------------------------------------
# Timing
# ---------------------------------------------------------------------------------------------


def run_once(step, batches: list[Batch], *, warmup: int, device: torch.device) -> float:
    """W untimed steps, then the timed ones; returns the seconds of the timed steps."""
    for batch in batches[:warmup]:
        step(batch)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    start = time.perf_counter()
    for batch in batches[warmup:]:
        step(batch)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter() - start


def adaptive_cutoffs(given: str | None, vocab_size: int) -> tuple[int, ...]:
    """``--adaptive-cutoffs``, else the ModelConfig default when it fits the vocabulary (PTB),
    else cutoffs at the same shares of a small vocabulary (1/5 and 3/5, the synthetic corpus)."""
    if given:
        return tuple(int(item) for item in given.split(","))
    default = ModelConfig().adaptive_cutoffs
    return default if default[-1] < vocab_size else (vocab_size // 5, 3 * vocab_size // 5)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-dir", default=None, help="folder holding ptb.train.txt; default: the synthetic corpus")
    parser.add_argument("--embedding-dim", type=int, default=256)
    parser.add_argument("--hidden-dim", type=int, default=256)
    parser.add_argument("--latent-dim", type=int, default=32)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--encoder", choices=("lstm", "transformer"), default="lstm")
    parser.add_argument("--decoder", choices=("lstm", "transformer"), default="lstm")
    parser.add_argument(
        "--injection", default=None, help="comma-separated injection modes [initial_state,concat for an LSTM decoder, memory for a Transformer]"
    )
    parser.add_argument("--adaptive-cutoffs", default=None, help="comma-separated [2000,6000, or 1/5 and 3/5 of a smaller vocabulary]")
    parser.add_argument("--layers", type=int, default=None, help="layers of each Transformer [2]; LSTMs keep 1")
    parser.add_argument("--num-heads", type=int, default=4)
    parser.add_argument("--ff-dim", type=int, default=1024)
    parser.add_argument("--batches", type=int, default=100, help="timed batches per repeat (default 100)")
    parser.add_argument("--warmup", type=int, default=10, help="untimed warm-up batches per repeat (default 10)")
    parser.add_argument("--repeats", type=int, default=5, help="repeats per model, alternating (default 5)")
    parser.add_argument("--threads", type=int, default=2, help="torch.set_num_threads(T) (default 2)")
    parser.add_argument("--flow", choices=("none", "iaf", "planar"), default="none", help="also time the adaptive VAE with this flow")
    parser.add_argument("--flow-steps", type=int, default=2)
    parser.add_argument("--flow-hidden", type=int, default=320)
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    parser.add_argument(
        "--also-precision", choices=("bf16", "fp16"), default=None,
        help="also time the floor and both VAEs in this precision, in turn with the others in the same run, "
        "and report each model's gain and the VAE's gain as a share of the floor's",
    )
    parser.add_argument(
        "--precision", choices=("fp32", "bf16", "fp16"), default="fp32",
        help="autocast of every model's forward, as train.precision (the CPU trains in fp32; bf16 here measures why)",
    )
    parser.add_argument(
        "--cuda-graphs", action="store_true",
        help="also time the full-softmax VAE with train.cuda_graphs and the floor with the same capture "
        "(on the CPU: a dry run through seqvae's eager stand-in, not a speed measure)",
    )
    parser.add_argument("--graph-width", type=int, default=TrainConfig().cuda_graph_width, help="train.cuda_graph_width [8]")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of the table")
    args = parser.parse_args(argv)
    for name in ("embedding_dim", "hidden_dim", "latent_dim", "batch_size", "batches", "repeats", "graph_width"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be at least 1")
    if args.warmup < 0:
        parser.error("--warmup must be 0 or more")
    if args.threads < 1:
        parser.error("--threads must be at least 1")
    if args.device == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda: CUDA is not available on this machine")
    return args


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    seed_everything(args.seed)

    tokenizer, batches, source, train_sentences = load_batches(
        args.data_dir, batch_size=args.batch_size, count=args.warmup + args.batches, seed=args.seed, device=device
    )
    timed = batches[args.warmup :]
    tokens_timed = sum(batch.num_tokens for batch in timed)
    sentences_timed = sum(batch.num_sentences for batch in timed)
    padded_positions = sum(batch.mask.numel() for batch in timed)

    injection = args.injection or ("initial_state,concat" if args.decoder == "lstm" else "memory")
    transformer_layers = args.layers or 2
    model_config = ModelConfig(
        encoder=args.encoder,
        decoder=args.decoder,
        injection=tuple(injection.split(",")),
        embedding_dim=args.embedding_dim,
        hidden_dim=args.hidden_dim,
        latent_dim=args.latent_dim,
        num_heads=args.num_heads,
        ff_dim=args.ff_dim,
        encoder_layers=transformer_layers if args.encoder == "transformer" else 1,
        decoder_layers=transformer_layers if args.decoder == "transformer" else 1,
    )
    model_config = dataclasses.replace(model_config, adaptive_cutoffs=adaptive_cutoffs(args.adaptive_cutoffs, tokenizer.vocab_size))
    models: dict[str, nn.Module] = {}
    seed_everything(args.seed)
    models["lm_floor"] = LSTMLanguageModel(tokenizer.vocab_size, args.embedding_dim, args.hidden_dim).to(device)
    for layer in ("softmax", "adaptive"):
        seed_everything(args.seed)
        models[f"vae_{layer}"] = build_model(
            dataclasses.replace(model_config, output_layer=layer),
            vocab_size=tokenizer.vocab_size,
            pad_id=tokenizer.pad_id,
            unk_id=tokenizer.unk_id,
        ).to(device)
    if args.flow != "none":
        seed_everything(args.seed)
        flow_config = dataclasses.replace(
            model_config, output_layer="adaptive", flow=args.flow, flow_steps=args.flow_steps, flow_hidden=args.flow_hidden
        )
        models[f"vae_adaptive_{args.flow}"] = build_model(
            flow_config, vocab_size=tokenizer.vocab_size, pad_id=tokenizer.pad_id, unk_id=tokenizer.unk_id
        ).to(device)
    if args.cuda_graphs:
        seed_everything(args.seed)
        models["lm_floor_graphed"] = LSTMLanguageModel(tokenizer.vocab_size, args.embedding_dim, args.hidden_dim).to(device)
        seed_everything(args.seed)
        models["vae_softmax_graphed"] = build_model(
            dataclasses.replace(model_config, output_layer="softmax"),
            vocab_size=tokenizer.vocab_size,
            pad_id=tokenizer.pad_id,
            unk_id=tokenizer.unk_id,
        ).to(device)
    precision = Precision(args.precision, device)
    compared = ("lm_floor", "vae_softmax", "vae_adaptive")
    if args.also_precision:  # the same initial weights, each copy with an optimizer of its own
        for name in compared:
            models[f"{name}_{args.also_precision}"] = copy.deepcopy(models[name])
    steps = {}
    for name, model in models.items():
        if name.endswith("_graphed"):
            kind = GraphedFloorStep if name.startswith("lm_floor") else GraphedVAEStep
            steps[name] = kind(model.train(), device, precision, args.graph_width)
        else:
            other = args.also_precision is not None and name.endswith(f"_{args.also_precision}")
            kind = FloorStep if name.startswith("lm_floor") else VAEStep
            steps[name] = kind(model.train(), device, Precision(args.also_precision, device) if other else precision)
    parameters = {name: sum(p.numel() for p in model.parameters()) for name, model in models.items()}

    rss = {"before_timing": max_rss_mib()}
    seconds: dict[str, list[float]] = {name: [] for name in steps}
    cuda_peak: dict[str, float] = {name: 0.0 for name in steps}
    seed_everything(args.seed)
    for repeat in range(args.repeats):
        for name, step in steps.items():
            if device.type == "cuda":
                torch.cuda.reset_peak_memory_stats(device)
            seconds[name].append(run_once(step, batches, warmup=args.warmup, device=device))
            if device.type == "cuda":
                cuda_peak[name] = max(cuda_peak[name], torch.cuda.max_memory_allocated(device) / 2**20)
            if repeat == 0:
                rss[f"after_first_{name}_repeat"] = max_rss_mib()

    rates = {name: [tokens_timed / s for s in values] for name, values in seconds.items()}
    median = {name: statistics.median(values) for name, values in rates.items()}
    result = {
        "lm_floor_tokens_per_s": median["lm_floor"],
        "vae_softmax_tokens_per_s": median["vae_softmax"],
        "vae_adaptive_tokens_per_s": median["vae_adaptive"],
        "ratio_vae_softmax_to_floor": median["vae_softmax"] / median["lm_floor"],
        "ratio_vae_adaptive_to_floor": median["vae_adaptive"] / median["lm_floor"],
        **(
            {
                f"vae_adaptive_{args.flow}_tokens_per_s": median[f"vae_adaptive_{args.flow}"],
                f"ratio_vae_adaptive_{args.flow}_to_floor": median[f"vae_adaptive_{args.flow}"] / median["lm_floor"],
                f"ratio_{args.flow}_to_gaussian": median[f"vae_adaptive_{args.flow}"] / median["vae_adaptive"],
                "flow": {"kind": args.flow, "steps": args.flow_steps, "hidden": args.flow_hidden},
            }
            if args.flow != "none"
            else {}
        ),
        **(
            {
                "lm_floor_graphed_tokens_per_s": median["lm_floor_graphed"],
                "vae_softmax_graphed_tokens_per_s": median["vae_softmax_graphed"],
                "ratio_vae_softmax_graphed_to_floor": median["vae_softmax_graphed"] / median["lm_floor"],
                "ratio_vae_softmax_graphed_to_graphed_floor": median["vae_softmax_graphed"] / median["lm_floor_graphed"],
                "ratio_graphed_to_eager_vae_softmax": median["vae_softmax_graphed"] / median["vae_softmax"],
                "graph_width": args.graph_width,
                "graphs_captured": {name: len(steps[name].graphs.graphs if name.startswith("vae") else steps[name].graphs)
                                    for name in steps if name.endswith("_graphed")},
            }
            if args.cuda_graphs
            else {}
        ),
        **(
            {
                **{f"{name}_{args.also_precision}_tokens_per_s": median[f"{name}_{args.also_precision}"] for name in compared},
                **{f"gain_{name}": median[f"{name}_{args.also_precision}"] / median[name] for name in compared},
                **{f"gain_share_{name}": (median[f"{name}_{args.also_precision}"] / median[name])
                   / (median[f"lm_floor_{args.also_precision}"] / median["lm_floor"]) for name in compared[1:]},
                f"ratio_vae_adaptive_{args.also_precision}_to_{args.precision}_floor":
                    median[f"vae_adaptive_{args.also_precision}"] / median["lm_floor"],
                "also_precision": args.also_precision,
            }
            if args.also_precision
            else {}
        ),
        "tokens_per_s_repeats": rates,
        "device": str(device),
        "precision": args.precision,
        "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or platform.machine(),
        "threads": torch.get_num_threads(),
        "cpu_model": cpu_model(),
        "cpu_bf16_units": bf16_units(cpu_flags()) or "none (no avx512_bf16, amx_bf16 or bf16 flag)",
        "pairing": f"{args.encoder}/{args.decoder} ({injection})",
        "embedding_dim": args.embedding_dim,
        "hidden_dim": args.hidden_dim,
        "latent_dim": args.latent_dim,
        "batch_size": args.batch_size,
        "vocab_size": tokenizer.vocab_size,
        "adaptive_cutoffs": list(model_config.adaptive_cutoffs),
        "adaptive_div_value": model_config.adaptive_div_value,
        "parameters": parameters,
        "batches": args.batches,
        "warmup": args.warmup,
        "repeats": args.repeats,
        "tokens_timed": tokens_timed,
        "sentences_timed": sentences_timed,
        "padding_share": 1.0 - tokens_timed / padded_positions,
        "vae_step": VAEStep.description,
        "optimizer": type(steps["lm_floor"].optimizer).__name__
        + f" (fused={steps['lm_floor'].optimizer.defaults.get('fused')}), the same for every model",
        "collate": "excluded (batches collated and moved to the device before timing, same batches for every model)",
        "data": source,
        "train_sentences": train_sentences,
        "seed": args.seed,
        "max_rss_mib": {"what": "peak resident set size of the whole process so far (resource.getrusage ru_maxrss)", **rss},
        "torch": torch.__version__,
        "python": platform.python_version(),
    }
    if device.type == "cuda":
        result["cuda_peak_allocated_mib"] = cuda_peak

    if args.json:
        print(json.dumps(result))
    else:
        print_table(result)
    return result


def print_table(r: dict) -> None:
    print(f"data        {r['data']} ({r['train_sentences']} sentences, vocabulary {r['vocab_size']})")
    print(
        f"VAE         encoder/decoder {r['pairing']}; adaptive cutoffs {r['adaptive_cutoffs']}, "
        f"div_value {r['adaptive_div_value']:g}\n"
        f"sizes       embedding {r['embedding_dim']}, hidden {r['hidden_dim']}, latent {r['latent_dim']}, "
        f"batch {r['batch_size']}"
    )
    print(f"device      {r['device']} ({r['device_name']}), threads {r['threads']}, torch {r['torch']}, {r['precision']}")
    print(f"cpu         {r['cpu_model']}; native bf16: {r['cpu_bf16_units']}")
    print(
        f"timing      {r['repeats']} repeats x ({r['warmup']} warm-up + {r['batches']} timed batches), "
        f"models in turn; median reported"
    )
    print(
        f"tokens      {r['tokens_timed']} per repeat (words + EOS; {r['sentences_timed']} sentences, "
        f"padding {100 * r['padding_share']:.1f}% of positions)"
    )
    print(f"VAE step    {r['vae_step']}")
    print(f"optimizer   {r['optimizer']}")
    print(f"collate     {r['collate']}")
    print()
    print(f"{'model':<18}{'params':>12}{'tokens/s (median)':>20}{'min':>12}{'max':>12}{'ratio to floor':>16}")
    for name in r["tokens_per_s_repeats"]:
        values = r["tokens_per_s_repeats"][name]
        ratio = r[f"{name}_tokens_per_s"] / r["lm_floor_tokens_per_s"]
        print(
            f"{name:<18}{r['parameters'][name]:>12,}{r[f'{name}_tokens_per_s']:>20,.0f}"
            f"{min(values):>12,.0f}{max(values):>12,.0f}{ratio:>16.3f}"
        )
    if "also_precision" in r:
        other, base = r["also_precision"], r["precision"]
        print(f"\n{other} gain (same run): " + ", ".join(f"{name} {r[f'gain_{name}']:.3f}x" for name in ("lm_floor", "vae_softmax", "vae_adaptive"))
              + f"; as a share of the floor's: vae_softmax {r['gain_share_vae_softmax']:.3f}, vae_adaptive {r['gain_share_vae_adaptive']:.3f}"
              + f"; vae_adaptive_{other} / {base} floor {r[f'ratio_vae_adaptive_{other}_to_{base}_floor']:.3f}")
    print()
    rss = {key: value for key, value in r["max_rss_mib"].items() if key != "what"}
    print("max RSS (process peak, getrusage): " + ", ".join(f"{key} {value:.0f} MiB" for key, value in rss.items()))
    if "cuda_peak_allocated_mib" in r:
        print("CUDA peak allocated: " + ", ".join(f"{k} {v:.0f} MiB" for k, v in r["cuda_peak_allocated_mib"].items()))


if __name__ == "__main__":
    main()

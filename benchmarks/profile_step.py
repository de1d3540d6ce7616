"""Where a training step's time goes: the VAE step beside two plain PyTorch floors, profiled.

``throughput.py`` compares the VAE with one LSTM language model. A sentence VAE also runs an
encoder LSTM over the sentence, a second recurrence the language model does not have, so this
script adds a second floor written with no seqvae model code:

- ``lm_floor``: ``throughput.LSTMLanguageModel`` and its step (one LSTM, full softmax);
- ``ae_floor``: a plain LSTM autoencoder of the same sizes: ``nn.Embedding -> nn.LSTM`` (encoder,
  its output at each sentence's last token) ``-> nn.Linear`` to the decoder's initial (h, c) and
  to a code concatenated to every decoder input, ``nn.LSTM -> nn.Linear(H, V)``; the same loss,
  clipping and optimizer as the language model. No sampling, no KL: the two recurrences and the
  softmax, which is what any LSTM sentence VAE must compute;
- ``vae_softmax`` and ``vae_adaptive``: ``throughput.VAEStep`` (``seqvae.training.train_step``);
- with ``--cuda-graphs``, ``vae_softmax_graphed``: the same step with ``train.cuda_graphs``.

For each model: the median wall time per step over R repeats of N steps (models in turn, as
throughput.py), then one profiled repeat (``torch.profiler``) giving, per step, the time the
device spent in kernels and the host time of the step, and the operators that take the most
device time and the most host time. A step whose device time is far below its wall time is bound
by the host (operator dispatch and kernel launches), not by the GPU's arithmetic.

    python benchmarks/profile_step.py --data-dir ../shared/data/ptb --device cuda [--precision bf16] [--json]

No timing is asserted anywhere.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import statistics
import sys
from pathlib import Path

import torch
from torch import nn
from torch.profiler import ProfilerActivity, profile

sys.path.insert(0, str(Path(__file__).resolve().parent))
from throughput import (  # noqa: E402  (a sibling script, not a package)
    FloorStep,
    GraphedVAEStep,
    LSTMLanguageModel,
    VAEStep,
    adaptive_cutoffs,
    load_batches,
    run_once,
    seed_everything,
)

from seqvae.config import ModelConfig  # noqa: E402
from seqvae.data.batching import Batch  # noqa: E402
from seqvae.models.vae import build_model  # noqa: E402
from seqvae.training import Precision  # noqa: E402


class LSTMAutoencoder(nn.Module):
    """Encoder LSTM -> code -> decoder LSTM (initial state and concatenated input), no seqvae code."""

    def __init__(self, vocab_size: int, embedding_dim: int, hidden_dim: int, latent_dim: int) -> None:
        super().__init__()
        self.encoder_embedding = nn.Embedding(vocab_size, embedding_dim)
        self.encoder = nn.LSTM(embedding_dim, hidden_dim, batch_first=True)
        self.to_code = nn.Linear(hidden_dim, latent_dim)
        self.to_state = nn.Linear(latent_dim, 2 * hidden_dim)
        self.decoder_embedding = nn.Embedding(vocab_size, embedding_dim)
        self.decoder = nn.LSTM(embedding_dim + latent_dim, hidden_dim, batch_first=True)
        self.output = nn.Linear(hidden_dim, vocab_size)

    def forward(self, tokens: torch.Tensor, lengths: torch.Tensor, inputs: torch.Tensor) -> torch.Tensor:
        outputs, _ = self.encoder(self.encoder_embedding(tokens))  # (B, T, H)
        last = (lengths - 1).view(-1, 1, 1).expand(-1, 1, outputs.shape[-1])
        code = self.to_code(outputs.gather(1, last).squeeze(1))  # (B, Z)
        h, c = torch.tanh(self.to_state(code)).unsqueeze(0).chunk(2, dim=-1)
        embedded = self.decoder_embedding(inputs)
        embedded = torch.cat([embedded, code.unsqueeze(1).expand(-1, inputs.shape[1], -1)], dim=-1)
        hidden, _ = self.decoder(embedded, (h.contiguous(), c.contiguous()))
        return self.output(hidden)  # (B, T, V)


class AEFloorStep(FloorStep):
    """The language model's step (loss, clipping, optimizer, ``float(loss)``) on the autoencoder."""

    def logits(self, batch: Batch) -> torch.Tensor:
        return self.model(batch.targets, batch.lengths, batch.inputs)  # the encoder reads x <eos>, as seqvae's


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def profiled(step, batches: list[Batch], device: torch.device, top: int) -> dict:
    """Device time in kernels and host time per step, and the operators that take the most."""
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    with profile(activities=activities) as prof:
        for batch in batches:
            step(batch)
        synchronize(device)
    averages = prof.key_averages()
    count = len(batches)
    device_us = sum(getattr(e, "self_device_time_total", 0.0) for e in averages)
    host_us = sum(e.self_cpu_time_total for e in averages)

    def table(key: str) -> list[dict]:
        rows = sorted(averages, key=lambda e: getattr(e, key, 0.0), reverse=True)[:top]
        return [
            {
                "op": e.key,
                "calls_per_step": e.count / count,
                "device_ms_per_step": getattr(e, "self_device_time_total", 0.0) / count / 1e3,
                "host_ms_per_step": e.self_cpu_time_total / count / 1e3,
            }
            for e in rows
        ]

    return {
        "device_kernel_ms_per_step": device_us / count / 1e3,
        "host_self_ms_per_step": host_us / count / 1e3,
        "top_by_device": table("self_device_time_total") if device.type == "cuda" else [],
        "top_by_host": table("self_cpu_time_total"),
    }


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data-dir", default=None, help="folder holding ptb.train.txt; default: the synthetic corpus")
    parser.add_argument("--embedding-dim", type=int, default=256)
    parser.add_argument("--hidden-dim", type=int, default=256)
    parser.add_argument("--latent-dim", type=int, default=32)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--batches", type=int, default=50, help="timed batches per repeat (default 50)")
    parser.add_argument("--warmup", type=int, default=10)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--profiled", type=int, default=20, help="steps in each model's profiled repeat (default 20)")
    parser.add_argument("--top", type=int, default=12, help="operators listed per table (default 12)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    parser.add_argument("--precision", choices=("fp32", "bf16", "fp16"), default="fp32")
    parser.add_argument(
        "--cuda-graphs", action="store_true",
        help="also the full-softmax VAE with train.cuda_graphs (throughput.GraphedVAEStep); its shapes are captured "
        "in the timed repeats, before the profiled one",
    )
    parser.add_argument("--graph-width", type=int, default=8, help="train.cuda_graph_width [8]")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    if args.device == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda: CUDA is not available on this machine")
    for name in ("batch_size", "batches", "repeats", "profiled", "top", "threads"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be at least 1")
    return args


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    seed_everything(args.seed)
    count = args.warmup + max(args.batches, args.profiled)
    tokenizer, batches, source, _ = load_batches(args.data_dir, batch_size=args.batch_size, count=count, seed=args.seed, device=device)
    timed = batches[: args.warmup + args.batches]
    tokens = sum(batch.num_tokens for batch in timed[args.warmup :])

    vocab, e, h, z = tokenizer.vocab_size, args.embedding_dim, args.hidden_dim, args.latent_dim
    precision = Precision(args.precision, device)
    config = dataclasses.replace(
        ModelConfig(embedding_dim=e, hidden_dim=h, latent_dim=z), adaptive_cutoffs=adaptive_cutoffs(None, vocab)
    )
    steps = {}
    seed_everything(args.seed)
    steps["lm_floor"] = FloorStep(LSTMLanguageModel(vocab, e, h).to(device).train(), device, precision)
    seed_everything(args.seed)
    steps["ae_floor"] = AEFloorStep(LSTMAutoencoder(vocab, e, h, z).to(device).train(), device, precision)
    for layer in ("softmax", "adaptive"):
        seed_everything(args.seed)
        model = build_model(
            dataclasses.replace(config, output_layer=layer), vocab_size=vocab, pad_id=tokenizer.pad_id, unk_id=tokenizer.unk_id
        )
        steps[f"vae_{layer}"] = VAEStep(model.to(device).train(), device, precision)
    if args.cuda_graphs:
        seed_everything(args.seed)
        model = build_model(
            dataclasses.replace(config, output_layer="softmax"), vocab_size=vocab, pad_id=tokenizer.pad_id, unk_id=tokenizer.unk_id
        )
        steps["vae_softmax_graphed"] = GraphedVAEStep(model.to(device).train(), device, precision, args.graph_width)

    seconds: dict[str, list[float]] = {name: [] for name in steps}
    for _repeat in range(args.repeats):
        for name, step in steps.items():
            seconds[name].append(run_once(step, timed, warmup=args.warmup, device=device))
    median_ms = {name: statistics.median(values) / args.batches * 1e3 for name, values in seconds.items()}
    profiles = {name: profiled(step, batches[args.warmup : args.warmup + args.profiled], device, args.top) for name, step in steps.items()}
    result = {
        "device": str(device),
        "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
        "precision": args.precision,
        "torch": torch.__version__,
        "data": source,
        "sizes": {"vocab": vocab, "embedding": e, "hidden": h, "latent": z, "batch": args.batch_size},
        "tokens_per_timed_repeat": tokens,
        "wall_ms_per_step": median_ms,
        "tokens_per_s": {name: tokens / (ms * args.batches / 1e3) for name, ms in median_ms.items()},
        "ratio_to_lm_floor": {name: median_ms["lm_floor"] / ms for name, ms in median_ms.items()},
        "ratio_to_ae_floor": {name: median_ms["ae_floor"] / ms for name, ms in median_ms.items()},
        "profile": profiles,
    }
    if args.json:
        print(json.dumps(result))
    else:
        print_report(result)
    return result


def print_report(r: dict) -> None:
    print(f"{r['device']} ({r['device_name']}), {r['precision']}, torch {r['torch']}, data {r['data']}, sizes {r['sizes']}")
    print(f"{'model':<20}{'wall ms/step':>14}{'tokens/s':>12}{'/ lm floor':>12}{'/ ae floor':>12}{'kernel ms':>12}{'host ms':>10}")
    for name, ms in r["wall_ms_per_step"].items():
        p = r["profile"][name]
        print(
            f"{name:<20}{ms:>14.2f}{r['tokens_per_s'][name]:>12,.0f}{r['ratio_to_lm_floor'][name]:>12.3f}"
            f"{r['ratio_to_ae_floor'][name]:>12.3f}{p['device_kernel_ms_per_step']:>12.2f}{p['host_self_ms_per_step']:>10.2f}"
        )
    for name, p in r["profile"].items():
        for key in ("top_by_device", "top_by_host"):
            if p[key]:
                print(f"\n{name}: {key.replace('_', ' ')} (per step)")
                for row in p[key]:
                    print(
                        f"  {row['op'][:60]:<60}{row['calls_per_step']:>7.1f} calls{row['device_ms_per_step']:>9.3f} dev ms"
                        f"{row['host_ms_per_step']:>9.3f} host ms"
                    )


if __name__ == "__main__":
    main()

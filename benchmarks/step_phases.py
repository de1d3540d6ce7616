"""Where the bf16 gain of a VAE training step goes: the step's four phases timed apart, fp32
against bf16 autocast, for seqvae's VAE at the PTB recipe's sizes.

The phases are those of ``seqvae.training.step.train_step``: the forward pass and the objective
(under autocast), the backward pass, the gradient-norm clipping and the optimizer step (both in
fp32 whatever the precision: the weights and Adam's state are fp32). Each precision trains its
own copy of the model from the same initial weights on the same batches, the two in turn,
``--repeats`` times; each phase's figure is the best repeat's mean over the timed batches.
The gain of the whole step is capped by the phases bf16 does not touch.

    python benchmarks/step_phases.py --data-dir ../shared/data/ptb --threads 2 [--output-layer softmax]

No timing is asserted anywhere; absolute numbers depend on the machine and its load.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import throughput  # noqa: E402

from seqvae.config import ModelConfig  # noqa: E402
from seqvae.losses import elbo_objective  # noqa: E402
from seqvae.models.vae import build_model  # noqa: E402
from seqvae.precision import bf16_units, cpu_flags, cpu_model  # noqa: E402
from seqvae.training.step import Precision  # noqa: E402

PHASES = ("forward", "backward", "clip", "optimizer")


def time_phases(model, optimizer, batches, precision: Precision, warmup: int) -> dict[str, float]:
    """Mean milliseconds of each phase over the batches after ``warmup``."""
    totals = dict.fromkeys(PHASES, 0.0)
    parameters = list(model.parameters())
    for index, batch in enumerate(batches):
        started = time.perf_counter()
        with precision.autocast():
            output = model(batch, word_dropout_rate=0.0)
        goal = elbo_objective(output, batch, kl_weight=1.0, free_bits="none", free_bits_lambda=0.0)
        optimizer.zero_grad(set_to_none=True)
        forward = time.perf_counter()
        goal.total.backward()
        backward = time.perf_counter()
        torch.nn.utils.clip_grad_norm_(parameters, throughput.GRAD_CLIP)
        clipped = time.perf_counter()
        optimizer.step()
        stepped = time.perf_counter()
        if index >= warmup:
            for phase, seconds in zip(PHASES, (forward - started, backward - forward, clipped - backward, stepped - clipped)):
                totals[phase] += 1000 * seconds / (len(batches) - warmup)
    return totals


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data-dir", default=None, help="folder holding ptb.train.txt [the embedded corpus]")
    parser.add_argument("--output-layer", choices=("adaptive", "softmax"), default="adaptive")
    parser.add_argument("--batches", type=int, default=40)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    cpu = torch.device("cpu")
    tokenizer, batches, source, _ = throughput.load_batches(
        args.data_dir, batch_size=32, count=args.warmup + args.batches, seed=0, device=cpu
    )
    config = ModelConfig(embedding_dim=256, hidden_dim=256, latent_dim=32, output_layer=args.output_layer)
    config = dataclasses.replace(config, adaptive_cutoffs=throughput.adaptive_cutoffs(None, tokenizer.vocab_size))
    runs = {}
    for name in ("fp32", "bf16"):
        torch.manual_seed(0)
        model = build_model(config, vocab_size=tokenizer.vocab_size, pad_id=tokenizer.pad_id, unk_id=tokenizer.unk_id).train()
        runs[name] = (model, throughput.build_optimizer(model.parameters(), learning_rate=1e-3, device=cpu), Precision(name, cpu))
    timed: dict[str, list[dict[str, float]]] = {name: [] for name in runs}
    for _ in range(args.repeats):
        for name, (model, optimizer, precision) in runs.items():
            timed[name].append(time_phases(model, optimizer, batches, precision, args.warmup))
    best = {name: {phase: min(run[phase] for run in values) for phase in PHASES} for name, values in timed.items()}
    result = {
        "cpu": cpu_model(), "bf16_units": bf16_units(cpu_flags()), "threads": args.threads, "data": source,
        "output_layer": args.output_layer, "ms": best,
        "step_ms": {name: sum(values.values()) for name, values in best.items()},
        "gain": {phase: best["fp32"][phase] / best["bf16"][phase] for phase in PHASES},
    }
    result["gain"]["step"] = result["step_ms"]["fp32"] / result["step_ms"]["bf16"]
    if args.json:
        print(json.dumps(result, indent=1))
    else:
        print(f"{result['cpu']} (bf16 units: {', '.join(result['bf16_units']) or 'none'}), {args.threads} threads, {source}, "
              f"{args.output_layer} output layer")
        print(f"{'phase':<12}{'fp32 ms':>10}{'bf16 ms':>10}{'gain':>8}")
        for phase in (*PHASES, "step"):
            fp32 = result["step_ms"]["fp32"] if phase == "step" else best["fp32"][phase]
            bf16 = result["step_ms"]["bf16"] if phase == "step" else best["bf16"][phase]
            print(f"{phase:<12}{fp32:>10.2f}{bf16:>10.2f}{result['gain'][phase]:>8.2f}")
    return result


if __name__ == "__main__":
    main()

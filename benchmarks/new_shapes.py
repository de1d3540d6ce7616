"""What a training step costs on batches it has not seen, against batches seen before: the cost
of building kernels for new shapes, which ``throughput.py`` and ``step_phases.py`` leave out
(they time the same batches over and over).

On the CPU in bf16, oneDNN JIT-compiles a kernel for each new matrix shape and keeps at most
1,024 of them. A training epoch brings a new sentence length at a time (the LSTMs' and the head's
shapes), and with the adaptive output layer a new count of positions per tail cluster at almost
every batch. seqvae pads those counts to few values (``seqvae.models.output_layer.few_row_counts``);
this benchmark times the step of the PTB recipe's VAE (Li et al.'s sizes, adaptive layer, Adam,
``seqvae.training.train_step``) over the first ``--batches`` batches of an epoch, each new, then
over the same batches again, in three variants, each in a process of its own so that none
inherits another's kernels:

- ``fp32``: the floor, no autocast;
- ``bf16``: as training runs it, the tail counts padded;
- ``bf16-unpadded``: the counts as they come.

    python benchmarks/new_shapes.py --data-dir ../shared/data/ptb --threads 1 [--batches 400]

No timing is asserted anywhere; absolute numbers depend on the machine and its load.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import subprocess
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import throughput  # noqa: E402

from seqvae.config import ModelConfig, ObjectiveConfig  # noqa: E402
from seqvae.models import output_layer  # noqa: E402
from seqvae.models.vae import build_model  # noqa: E402
from seqvae.precision import bf16_units, cpu_flags, cpu_model  # noqa: E402
from seqvae.training.step import Precision, train_step  # noqa: E402

VARIANTS = ("fp32", "bf16", "bf16-unpadded")


def time_variant(variant: str, data_dir: str | None, batches: int, threads: int) -> dict[str, float]:
    """Mean ms a step over the new batches, by quarter and in all, then over them again."""
    torch.set_num_threads(threads)
    cpu = torch.device("cpu")
    if variant == "bf16-unpadded":
        output_layer.few_row_counts = lambda rows: rows
    tokenizer, chosen, _, _ = throughput.load_batches(data_dir, batch_size=32, count=batches, seed=0, device=cpu)
    config = ModelConfig(embedding_dim=256, hidden_dim=256, latent_dim=32, output_layer="adaptive", dropout=0.5)
    config = dataclasses.replace(config, adaptive_cutoffs=throughput.adaptive_cutoffs(None, tokenizer.vocab_size))
    torch.manual_seed(0)
    model = build_model(config, vocab_size=tokenizer.vocab_size, pad_id=tokenizer.pad_id, unk_id=tokenizer.unk_id).train()
    optimizer = throughput.build_optimizer(model.parameters(), learning_rate=1e-3, device=cpu)
    precision = Precision("fp32" if variant == "fp32" else "bf16", cpu)

    def steps() -> list[float]:
        seconds = []
        for batch in chosen:
            started = time.perf_counter()
            train_step(model, optimizer, batch, kl_weight=1.0, objective=ObjectiveConfig(), grad_clip=throughput.GRAD_CLIP,
                       precision=precision)
            seconds.append(time.perf_counter() - started)
        return seconds

    new, seen = steps(), steps()
    quarter = max(-(-len(new) // 4), 1)
    return {
        "new_ms": 1000 * sum(new) / len(new), "seen_ms": 1000 * sum(seen) / len(seen),
        "new_ms_by_quarter": [1000 * sum(new[i : i + quarter]) / len(new[i : i + quarter]) for i in range(0, len(new), quarter)],
    }


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data-dir", default=None, help="folder holding ptb.train.txt [the embedded corpus]")
    parser.add_argument("--batches", type=int, default=400)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--variant", choices=VARIANTS, help=argparse.SUPPRESS)  # one variant, in this process
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    if args.variant:
        print(json.dumps(time_variant(args.variant, args.data_dir, args.batches, args.threads)))
        return {}
    timed = {}
    for variant in VARIANTS:
        command = [sys.executable, __file__, "--variant", variant, "--batches", str(args.batches), "--threads", str(args.threads)]
        if args.data_dir:
            command += ["--data-dir", args.data_dir]
        timed[variant] = json.loads(subprocess.run(command, check=True, capture_output=True, text=True).stdout.splitlines()[-1])
    floor = timed["fp32"]["new_ms"]
    result = {"cpu": cpu_model(), "bf16_units": bf16_units(cpu_flags()), "threads": args.threads,
              "batches": args.batches, "timed": timed,
              "speedup_over_fp32_new": {variant: floor / timed[variant]["new_ms"] for variant in VARIANTS}}
    if args.json:
        print(json.dumps(result, indent=1))
    else:
        print(f"{result['cpu']} (bf16 units: {', '.join(result['bf16_units']) or 'none'}), {args.threads} threads, "
              f"the first {args.batches} batches of an epoch")
        print(f"{'variant':<15}{'new ms':>8}{'seen ms':>9}{'x fp32':>8}   new ms by quarter")
        for variant in VARIANTS:
            row = timed[variant]
            quarters = " ".join(f"{value:.1f}" for value in row["new_ms_by_quarter"])
            print(f"{variant:<15}{row['new_ms']:>8.1f}{row['seen_ms']:>9.1f}{result['speedup_over_fp32_new'][variant]:>8.2f}   {quarters}")
    return result


if __name__ == "__main__":
    main()

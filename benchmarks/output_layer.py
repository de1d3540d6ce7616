"""Where the adaptive softmax starts to pay: training-step time of the VAE with the full softmax
against the adaptive softmax (Grave et al. 2017) over vocabulary sizes, in the same run.

What is measured
----------------
For each vocabulary size V, two VAEs that differ only in ``model.output_layer`` (``softmax``;
``adaptive`` with cutoffs at 1/5 and 3/5 of V, the shares of PTB's [2000, 6000] for its 10,000
words, div_value 4) take the training step of ``seqvae.training.train_step`` (KL weight 1, no free
bits, clip 5, fused Adam at 1e-3) on the same batches. Token ids are drawn from a Zipf law of
exponent 1 over V types (rank r with probability proportional to 1 / r, as word frequencies in
text roughly are; the adaptive layer's cost depends on how many targets fall outside its head),
sentence lengths from 5 to 40 tokens, 32 sentences a batch. Each repeat runs both models in turn
(W untimed steps, then N timed); the median over repeats is reported, and the ratio
adaptive / softmax, whose value below 1 means the adaptive layer is faster.

The break-even read from this table is ``seqvae.corpus_decisions.ADAPTIVE_FROM`` (recipes/text/run.py
picks the adaptive layer from that vocabulary size on). No timing is asserted anywhere.

    python benchmarks/output_layer.py [--sizes 1000,2000,4000,8000,16000,32000] [--threads 1] [--json]
"""

from __future__ import annotations

import argparse
import json
import platform
import random
import statistics
import time

import torch

from seqvae.config import ModelConfig, ObjectiveConfig
from seqvae.data.batching import collate
from seqvae.models.vae import build_model
from seqvae.training import build_optimizer, train_step
from seqvae.data.tokenizers import SPECIALS


def zipf_batches(vocab_size: int, *, count: int, batch_size: int, seed: int) -> list:
    """``count`` batches of sentences whose ids follow a Zipf law over the non-special ids."""
    rng = random.Random(seed)
    ranks = range(1, vocab_size - len(SPECIALS) + 1)
    weights = [1.0 / rank for rank in ranks]
    ids = [len(SPECIALS) + rank - 1 for rank in ranks]
    batches = []
    for _ in range(count):
        length = rng.randint(5, 40)  # one length a batch, as bucketed batches nearly are
        batches.append(collate([rng.choices(ids, weights, k=length) for _ in range(batch_size)]))
    return batches


def time_model(output_layer: str, vocab_size: int, batches, *, warmup: int, repeats: int, sizes: dict) -> float:
    """Median seconds per step over the repeats."""
    torch.manual_seed(0)
    cutoffs = (vocab_size // 5, 3 * vocab_size // 5)
    config = ModelConfig(output_layer=output_layer, adaptive_cutoffs=cutoffs, **sizes)
    model = build_model(config, vocab_size=vocab_size, pad_id=0, unk_id=1)
    model.train()
    optimizer = build_optimizer(model.parameters(), learning_rate=1e-3, device=torch.device("cpu"))
    objective = ObjectiveConfig(free_bits="none")
    times = []
    for _ in range(repeats):
        for batch in batches[:warmup]:
            train_step(model, optimizer, batch, kl_weight=1.0, objective=objective, grad_clip=5.0)
        start = time.perf_counter()
        for batch in batches[warmup:]:
            train_step(model, optimizer, batch, kl_weight=1.0, objective=objective, grad_clip=5.0)
        times.append((time.perf_counter() - start) / (len(batches) - warmup))
    return statistics.median(times)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="1000,2000,4000,8000,16000,32000")
    parser.add_argument("--embedding-dim", type=int, default=256)
    parser.add_argument("--hidden-dim", type=int, default=256)
    parser.add_argument("--latent-dim", type=int, default=32)
    parser.add_argument("--batches", type=int, default=30, help="timed steps per repeat")
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    sizes = {"embedding_dim": args.embedding_dim, "hidden_dim": args.hidden_dim, "latent_dim": args.latent_dim}
    rows = []
    for vocab_size in (int(item) for item in args.sizes.split(",")):
        batches = zipf_batches(vocab_size, count=args.warmup + args.batches, batch_size=32, seed=0)
        softmax = time_model("softmax", vocab_size, batches, warmup=args.warmup, repeats=args.repeats, sizes=sizes)
        adaptive = time_model("adaptive", vocab_size, batches, warmup=args.warmup, repeats=args.repeats, sizes=sizes)
        rows.append({"vocab_size": vocab_size, "softmax_ms": round(1000 * softmax, 2),
                     "adaptive_ms": round(1000 * adaptive, 2), "ratio": round(adaptive / softmax, 3)})
        if not args.json:
            print(f"V {vocab_size:>6}: softmax {1000 * softmax:7.1f} ms, adaptive {1000 * adaptive:7.1f} ms, "
                  f"adaptive / softmax {adaptive / softmax:.3f}", flush=True)
    machine = f"{platform.processor() or platform.machine()}, torch {torch.__version__}, {args.threads} thread(s)"
    if args.json:
        print(json.dumps({"machine": machine, "sizes": sizes, "rows": rows}, indent=1))
    else:
        print(machine)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

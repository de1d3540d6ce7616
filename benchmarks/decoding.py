"""Greedy decoding speed: the cached incremental decoder against recomputing the prefix.

For each decoder (LSTM, Transformer) of the given sizes, decode ``--sentences`` codes z ~ N(0, I)
into exactly ``--length`` tokens (end-of-sentence barred until then), batched over sentences, in
two ways:

- **cached**: ``seqvae.generation.greedy_decode``, one decoder call per step on the new token
  with the carried state (LSTM state; attention keys and values), T single-token steps;
- **recompute** (the floor every step is compared with): at each step the decoder reads the
  whole prefix from scratch, with no state, and the last position's argmax is appended; T calls
  on prefixes of length 1 ... T.

Both produce the same tokens (checked here, and in tests/test_transformer.py). Reported:
sentences per second of each (median of R repeats, alternating) and the speed-up. Untrained
weights: decoding cost does not depend on them.

    python benchmarks/decoding.py [--vocab-size 10002] [--sentences 64] [--length 32] [--repeats 3]
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import torch

from seqvae.config import ModelConfig
from seqvae.data.tokenizers import BOS_ID, EOS_ID
from seqvae.generation import greedy_decode
from seqvae.models.vae import build_model


@torch.no_grad()
def recompute_decode(decoder, z: torch.Tensor, *, length: int) -> list[list[int]]:
    """Greedy decoding without a cache: every step runs the decoder over the whole prefix."""
    tokens = torch.full((z.shape[0], 1), BOS_ID, dtype=torch.long)
    for _ in range(length):
        log_probs, _ = decoder.log_probs(tokens, z)
        scores = log_probs[:, -1].clone()
        scores[:, EOS_ID] = float("-inf")
        tokens = torch.cat([tokens, scores.argmax(dim=-1, keepdim=True)], dim=1)
    return tokens[:, 1:].tolist()


def measure(decoder, z: torch.Tensor, *, length: int, repeats: int) -> dict[str, float]:
    ways = {
        "cached": lambda: greedy_decode(decoder, z, max_length=length, min_length=length),
        "recompute": lambda: recompute_decode(decoder, z, length=length),
    }
    assert ways["cached"]() == ways["recompute"](), "cached and recomputed decoding disagree"
    seconds: dict[str, list[float]] = {name: [] for name in ways}
    for _ in range(repeats):
        for name, decode in ways.items():
            start = time.perf_counter()
            decode()
            seconds[name].append(time.perf_counter() - start)
    result = {f"{name}_sentences_per_s": z.shape[0] / statistics.median(values) for name, values in seconds.items()}
    result["speedup"] = result["cached_sentences_per_s"] / result["recompute_sentences_per_s"]
    return result


def add_decoder_arguments(parser: argparse.ArgumentParser) -> None:
    """The sizes and timing options the decoding benchmarks share."""
    parser.add_argument("--vocab-size", type=int, default=10002, help="PTB's word vocabulary by default")
    parser.add_argument("--embedding-dim", type=int, default=256)
    parser.add_argument("--hidden-dim", type=int, default=256)
    parser.add_argument("--latent-dim", type=int, default=32)
    parser.add_argument("--layers", type=int, default=2, help="Transformer decoder layers")
    parser.add_argument("--sentences", type=int, default=64)
    parser.add_argument("--length", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--json", action="store_true")


def prior_codes_and_decoders(args: argparse.Namespace) -> tuple[torch.Tensor, dict]:
    """z ~ N(0, I) (seed 0) and an untrained LSTM decoder (initial_state + concat) and Transformer
    decoder (``--layers`` blocks, memory) of the given sizes, in eval mode."""
    torch.manual_seed(0)
    z = torch.randn(args.sentences, args.latent_dim)
    decoders = {}
    for decoder, injection, layers in (("lstm", ("initial_state", "concat"), 1), ("transformer", ("memory",), args.layers)):
        config = ModelConfig(
            decoder=decoder,
            injection=injection,
            embedding_dim=args.embedding_dim,
            hidden_dim=args.hidden_dim,
            latent_dim=args.latent_dim,
            decoder_layers=layers,
        )
        decoders[decoder] = build_model(config, vocab_size=args.vocab_size).eval().decoder
    return z, decoders


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_decoder_arguments(parser)
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    z, decoders = prior_codes_and_decoders(args)
    results = {name: measure(decoder, z, length=args.length, repeats=args.repeats) for name, decoder in decoders.items()}
    report = {
        "sentences": args.sentences,
        "length": args.length,
        "vocab_size": args.vocab_size,
        "hidden_dim": args.hidden_dim,
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        **{f"{decoder}_{key}": value for decoder, values in results.items() for key, value in values.items()},
    }
    if args.json:
        print(json.dumps(report))
    else:
        print(
            f"greedy decoding of {args.sentences} sentences x {args.length} tokens, vocabulary {args.vocab_size}, "
            f"hidden {args.hidden_dim}, {report['threads']} threads, median of {args.repeats}"
        )
        print(f"{'decoder':<12} {'cached sent/s':>14} {'recompute sent/s':>17} {'speed-up':>9}")
        for decoder, values in results.items():
            print(
                f"{decoder:<12} {values['cached_sentences_per_s']:>14,.1f} "
                f"{values['recompute_sentences_per_s']:>17,.1f} {values['speedup']:>8.2f}x"
            )
    return report


if __name__ == "__main__":
    main()

"""Prior-sampling speed by decoding strategy: greedy, top-p sampling and beam search (width 5).

For each decoder (LSTM, Transformer) at the PTB sizes, ``--sentences`` codes z ~ N(0, I) are
decoded with ``seqvae.generation.decode`` into exactly ``--length`` tokens (<eos> barred before
the last position, so every strategy does the same number of steps: untrained weights would
otherwise never stop), batched over sentences (and beams), incremental with the cached state:

- **greedy** (the floor, measured in the same run): argmax at every step;
- **top-p**: nucleus sampling with p = 0.9 (a sort of the vocabulary per step and sentence);
- **beam**: beam search, 5 hypotheses per sentence, decoded as one batch of 5 x sentences.

Reported: sentences per second of each (median of R repeats, strategies alternating) and each
one's ratio to greedy. Untrained weights give nearly flat next-token distributions, the worst
case for top-p (its nucleus then spans most of the vocabulary and needs a full sort);
``--logit-scale S`` multiplies the output layer's weights by S to make them peaked, as a trained
model's are. No timing is asserted anywhere.

    python benchmarks/generation.py [--vocab-size 10002] [--sentences 64] [--length 32] [--repeats 3]
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import torch

from seqvae.generation import Decoding, decode

from decoding import add_decoder_arguments, prior_codes_and_decoders


def strategies(length: int) -> dict[str, Decoding]:
    fixed = {"max_length": length, "min_length": length - 1}
    return {
        "greedy": Decoding("greedy", **fixed),
        "top-p 0.9": Decoding("sample", top_p=0.9, **fixed),
        "beam 5": Decoding("beam", beam_size=5, **fixed),
    }


def measure(decoder, z: torch.Tensor, *, length: int, repeats: int) -> dict[str, float]:
    ways = strategies(length)
    seconds: dict[str, list[float]] = {name: [] for name in ways}
    for repeat in range(repeats):
        for name, decoding in ways.items():
            generator = torch.Generator().manual_seed(repeat)
            start = time.perf_counter()
            ids = decode(decoder, z, decoding, generator=generator)
            seconds[name].append(time.perf_counter() - start)
            assert all(len(row) >= length - 1 for row in ids), f"{name} stopped early"
    rates = {name: z.shape[0] / statistics.median(values) for name, values in seconds.items()}
    return {**{f"{name} sentences/s": rate for name, rate in rates.items()},
            **{f"{name} / greedy": rate / rates["greedy"] for name, rate in rates.items() if name != "greedy"}}


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_decoder_arguments(parser)
    parser.add_argument("--logit-scale", type=float, default=1.0, help="multiply the output layer's weights (peaked distributions)")
    args = parser.parse_args(argv)
    if min(args.sentences, args.repeats) < 1 or args.length < 2:
        parser.error("--sentences and --repeats must be at least 1, --length at least 2")
    if args.threads:
        torch.set_num_threads(args.threads)
    z, decoders = prior_codes_and_decoders(args)
    results = {}
    for name, decoder in decoders.items():
        with torch.no_grad():
            decoder.output.weight.mul_(args.logit_scale)
        results[name] = measure(decoder, z, length=args.length, repeats=args.repeats)
    report = {
        "sentences": args.sentences, "length": args.length, "vocab_size": args.vocab_size,
        "hidden_dim": args.hidden_dim, "logit_scale": args.logit_scale, "threads": torch.get_num_threads(), "torch": torch.__version__,
        "results": results,
    }
    if args.json:
        print(json.dumps(report))
    else:
        print(
            f"prior samples: {args.sentences} sentences x {args.length} tokens, vocabulary {args.vocab_size}, "
            f"hidden {args.hidden_dim}, logit scale {args.logit_scale:g}, {report['threads']} threads, median of {args.repeats}"
        )
        names = list(strategies(args.length))
        print(f"{'decoder':<12}" + "".join(f"{name + ' sent/s':>20}" for name in names) + f"{'top-p/greedy':>14}{'beam/greedy':>13}")
        for decoder, values in results.items():
            print(
                f"{decoder:<12}" + "".join(f"{values[name + ' sentences/s']:>20,.1f}" for name in names)
                + f"{values['top-p 0.9 / greedy']:>14.3f}{values['beam 5 / greedy']:>13.3f}"
            )
    return report


if __name__ == "__main__":
    main()

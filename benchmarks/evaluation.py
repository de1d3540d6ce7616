"""Cost of evaluation at the PTB sizes, for each output layer: the IW bound at K = 500 against a
language-model floor, and the wall time of a full ``seqvae eval`` on the PTB test set.

What is measured
----------------
1. **IW-NLL**: ``seqvae.measures.importance_weighted_log_likelihood`` with K samples (default
   500) on one evaluation batch of the test set, once with the full softmax and once with the
   adaptive softmax (``ModelConfig`` default cutoffs). The batch is the median one of the test
   set's evaluation batches (``sorted_batches`` with ``eval_batch_size``, as ``seqvae eval`` cuts
   them), so its length is typical. Reported per 1,000 sentences of the whole test set
   (``iw_seconds_per_1000_sentences_k500``): the probe's time scaled by the test set's padded
   token positions (each decoder pass costs in proportion to them), divided by its sentences.
2. **Floor**: a plain PyTorch LSTM language model of the same sizes with a full softmax
   (``benchmarks/throughput.py``'s ``LSTMLanguageModel``, no seqvae model code) scoring the same
   K x B sentence-samples: embedding, LSTM over as many samples per call as the IW bound's
   chunks, logits and cross-entropy a block of positions at a time (16 MB of logits, as
   seqvae's scoring path), summed over real tokens. The IW bound cannot cost less than K
   language-model passes, so ``ratio_iw_to_floor`` (floor time / IW time, above 1 = faster than
   the floor) shows what the encoder, the posterior, the output layer and seqvae's code add or save.
3. **Full evaluation** (unless ``--skip-full``): ``seqvae.evaluation.evaluate_split`` on the whole
   test set with every measure but the IW bound (teacher-forced, free-running and inputless
   passes, greedy decodes for BLEU, MI, active units, 100 prior samples), timed for real per
   output layer; plus the IW bound over the whole set from (1). Their sum estimates the wall
   time of ``seqvae eval RUN --split test``.

Like the ``seqvae`` command, the benchmark first calls ``seqvae.allocator.keep_freed_memory``.
The models are built at the PTB recipe's sizes with untrained weights: the IW cost does not
depend on the weights (the adaptive layer's depends on the targets, which are the test set's),
but an untrained decoder never emits EOS, so the greedy decodes run to their length limit
(input length + 10): the measured non-IW part is an upper bound for a trained model.

No timing is asserted anywhere; absolute numbers depend on the machine and its load.

Usage (from the repository root)::

    python benchmarks/evaluation.py --data-dir ../shared/data/ptb --json
    python benchmarks/evaluation.py                     # the embedded synthetic corpus
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import platform
import statistics
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from seqvae.allocator import keep_freed_memory
from seqvae.config import ModelConfig, TrainConfig
from seqvae.data.batching import EVAL_ROW_TOKENS, collate, encode_split, sorted_batches
from seqvae.data.corpus import load_text_files
from seqvae.data.synthetic import DEFAULT_SIZES, write_corpus
from seqvae.data.tokenizers import WordTokenizer
from seqvae.evaluation import evaluate_split
from seqvae.measures import SCORES_PER_CALL, importance_weighted_log_likelihood
from seqvae.models.vae import build_model

from throughput import LSTMLanguageModel, adaptive_cutoffs, max_rss_mib, seed_everything


def load_splits(data_dir: str | None, seed: int) -> tuple[list[str], list[str], str]:
    """Training sentences (for the vocabulary), test sentences, and where they came from."""
    if data_dir:
        paths = {"train": Path(data_dir) / "ptb.train.txt", "test": Path(data_dir) / "ptb.test.txt"}
        for path in paths.values():
            if not path.is_file():
                raise SystemExit(f"{path}: not found (--data-dir must hold ptb.train.txt and ptb.test.txt)")
        corpus = load_text_files({split: str(path) for split, path in paths.items()})
        return corpus.splits["train"], corpus.splits["test"], str(paths["test"])
    with tempfile.TemporaryDirectory(prefix="seqvae-bench-") as workdir:
        sizes = {"train": DEFAULT_SIZES["train"], "test": DEFAULT_SIZES["test"]}
        paths = write_corpus(workdir, seed=seed, sizes=sizes)
        corpus = load_text_files({split: str(path) for split, path in paths.items()})
        return corpus.splits["train"], corpus.splits["test"], f"synthetic (write_corpus, seed {seed})"


LOGIT_BYTES = 16 * 1024 * 1024


@torch.no_grad()
def floor_scores(model: LSTMLanguageModel, batch, *, samples: int, chunk: int) -> torch.Tensor:
    """-log p(x) of each sentence repeated ``samples`` times, ``chunk`` copies per LSTM call, the
    logits and cross-entropy over blocks of positions holding at most LOGIT_BYTES of logits."""
    scores = []
    inputs, targets, mask = (part.repeat(chunk, 1) for part in (batch.inputs, batch.targets, batch.mask))
    for start in range(0, samples, chunk):
        used = min(chunk, samples - start) * batch.num_sentences
        hidden, _ = model.lstm(model.embedding(inputs[:used]))  # (used, T, H)
        flat, flat_targets = hidden.reshape(-1, hidden.shape[-1]), targets[:used].reshape(-1)
        block = max(1, LOGIT_BYTES // (4 * model.output.out_features))
        nll = torch.cat([
            F.cross_entropy(model.output(flat[i : i + block]), flat_targets[i : i + block], reduction="none")
            for i in range(0, flat.shape[0], block)
        ])
        scores.append((nll.view(used, -1) * mask[:used]).sum(1))
    return torch.cat(scores)


def timed(function) -> float:
    start = time.perf_counter()
    function()
    return time.perf_counter() - start


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-dir", default=None, help="folder holding ptb.train.txt and ptb.test.txt; default: the synthetic corpus")
    parser.add_argument("--iw-samples", type=int, default=500, help="K (default 500)")
    parser.add_argument("--eval-batch-size", type=int, default=TrainConfig().eval_batch_size)
    parser.add_argument("--repeats", type=int, default=2, help="IW / floor repeats, alternating (median reported)")
    parser.add_argument("--prior-samples", type=int, default=100)
    parser.add_argument("--skip-full", action="store_true", help="time the IW bound and the floor only")
    parser.add_argument("--threads", type=int, default=2, help="torch.set_num_threads(T) (default 2)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of the summary")
    args = parser.parse_args(argv)
    for name in ("iw_samples", "eval_batch_size", "repeats"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be at least 1")
    return args


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    keep_freed_memory()
    torch.set_num_threads(args.threads)
    seed_everything(args.seed)
    train_sentences, test_sentences, source = load_splits(args.data_dir, args.seed)
    tokenizer = WordTokenizer.build(train_sentences)
    sequences = encode_split(tokenizer, test_sentences).sequences
    lengths = [len(sequence) for sequence in sequences]
    batches = [collate([sequences[i] for i in indices]) for indices in sorted_batches(
        lengths, batch_size=args.eval_batch_size, max_tokens=args.eval_batch_size * EVAL_ROW_TOKENS)]
    total_positions = sum(batch.mask.numel() for batch in batches)
    probe = batches[len(batches) // 2]
    scale = total_positions / probe.mask.numel()  # whole test set / probe, in padded positions

    base = ModelConfig(embedding_dim=256, hidden_dim=256, latent_dim=32, injection=("initial_state", "concat"))
    models = {}
    for layer in ("softmax", "adaptive"):
        config = dataclasses.replace(base, output_layer=layer, adaptive_cutoffs=adaptive_cutoffs(None, tokenizer.vocab_size))
        seed_everything(args.seed)
        models[layer] = build_model(config, vocab_size=tokenizer.vocab_size).eval()
    seed_everything(args.seed)
    floor = LSTMLanguageModel(tokenizer.vocab_size, base.embedding_dim, base.hidden_dim).eval()
    softmax_chunk = max(1, SCORES_PER_CALL // (probe.inputs.numel() * tokenizer.vocab_size))

    seconds: dict[str, list[float]] = {"softmax": [], "adaptive": [], "floor": []}
    for repeat in range(args.repeats):
        for layer, model in models.items():
            generator = torch.Generator().manual_seed(args.seed + repeat)
            seconds[layer].append(
                timed(lambda: importance_weighted_log_likelihood(model, probe, num_samples=args.iw_samples, generator=generator))
            )
        seconds["floor"].append(timed(lambda: floor_scores(floor, probe, samples=args.iw_samples, chunk=softmax_chunk)))
    median = {name: statistics.median(values) for name, values in seconds.items()}
    k = args.iw_samples
    result = {
        "data": source,
        "vocab_size": tokenizer.vocab_size,
        "test_sentences": len(sequences),
        "test_tokens": sum(lengths) + len(lengths),
        "eval_batches": len(batches),
        "probe_batch": {"sentences": probe.num_sentences, "positions": probe.mask.shape[1], "tokens": probe.num_tokens},
        "iw_samples": k,
        "adaptive_cutoffs": list(models["adaptive"].decoder.output.cutoffs[:-1]),
    }
    for layer in models:
        whole = median[layer] * scale
        result[f"iw_seconds_per_1000_sentences_k{k}_{layer}"] = 1000 * whole / len(sequences)
        result[f"iw_whole_test_set_s_{layer}"] = whole
        result[f"iw_sentence_samples_per_s_{layer}"] = probe.num_sentences * k / median[layer]
        result[f"ratio_iw_to_floor_{layer}"] = median["floor"] / median[layer]
    result["iw_seconds_per_1000_sentences_k500"] = {
        layer: result[f"iw_seconds_per_1000_sentences_k{k}_{layer}"] * 500 / k for layer in models
    }
    result["ratio_iw_to_floor"] = {layer: result[f"ratio_iw_to_floor_{layer}"] for layer in models}
    result["floor_sentence_samples_per_s"] = probe.num_sentences * k / median["floor"]
    result["seconds_repeats"] = seconds
    if not args.skip_full:
        for layer, model in models.items():
            rest = timed(
                lambda: evaluate_split(model, batches, tokenizer, iw_samples=0, prior_samples=args.prior_samples, seed=args.seed)
            )
            result[f"other_measures_whole_test_set_s_{layer}"] = rest
            result[f"full_eval_s_estimate_{layer}"] = rest + result[f"iw_whole_test_set_s_{layer}"]
    result.update(
        threads=torch.get_num_threads(),
        machine=platform.processor() or platform.machine(),
        torch=torch.__version__,
        max_rss_mib=max_rss_mib(),
        parameters={
            **{f"vae_{layer}": sum(p.numel() for p in model.parameters()) for layer, model in models.items()},
            "floor": sum(p.numel() for p in floor.parameters()),
        },
    )
    if args.json:
        print(json.dumps(result))
    else:
        print_summary(result)
    return result


def print_summary(r: dict) -> None:
    probe = r["probe_batch"]
    k = r["iw_samples"]
    print(f"data        {r['data']}: {r['test_sentences']} test sentences, {r['test_tokens']} tokens (words + EOS), vocabulary {r['vocab_size']}")
    print(
        f"model       LSTM/LSTM, embedding 256, hidden 256, latent 32; output layers softmax and adaptive "
        f"(cutoffs {r['adaptive_cutoffs']})"
    )
    print(f"machine     {r['machine']}, {r['threads']} threads, torch {r['torch']}")
    print(f"IW batch    the median evaluation batch: {probe['sentences']} sentences, {probe['positions']} positions; K = {k}")
    print(f"floor       {r['floor_sentence_samples_per_s']:,.0f} sentence-samples/s (full-softmax LSTM LM)")
    print(f"{'layer':<10}{'sent-samples/s':>16}{'ratio to floor':>16}{'IW s/1000 sent':>16}{'IW test set':>14}{'full eval':>12}")
    for layer in ("softmax", "adaptive"):
        whole = r[f"iw_whole_test_set_s_{layer}"]
        full = r.get(f"full_eval_s_estimate_{layer}")
        print(
            f"{layer:<10}{r[f'iw_sentence_samples_per_s_{layer}']:>16,.0f}{r[f'ratio_iw_to_floor_{layer}']:>16.2f}"
            f"{r[f'iw_seconds_per_1000_sentences_k{k}_{layer}']:>16,.1f}{whole / 60:>12.1f} m"
            + (f"{full / 60:>10.1f} m" if full is not None else "")
        )
    print(f"max RSS     {r['max_rss_mib']:.0f} MiB")


if __name__ == "__main__":
    main()

"""Cost of evaluation at the PTB sizes: IW-NLL throughput at K = 500 against a floor, and the
wall time of a full ``seqvae eval`` on the PTB test set.

What is measured
----------------
1. **IW-NLL throughput**: ``seqvae.measures.importance_weighted_log_likelihood`` with K samples
   (default 500) on one evaluation batch of the test set, in sentences per second (each sentence
   with its K decoder passes) and in sentence-samples per second. The batch is the median one of
   the test set's evaluation batches (``sorted_batches`` with ``eval_batch_size``, as
   ``seqvae eval`` cuts them), so its length is typical.
2. **Floor**: a plain PyTorch LSTM language model of the same sizes (``benchmarks/throughput.py``'s
   ``LSTMLanguageModel``, no seqvae model code) scoring the same K x B sentences in the same
   chunks: embedding, LSTM, output layer, cross-entropy summed over real tokens. The IW bound
   cannot cost less than K language-model passes, so the ratio IW/floor shows what the encoder,
   the posterior and seqvae's code add.
3. **Full evaluation**: ``seqvae.evaluation.evaluate_split`` on the whole test set with every
   measure but the IW bound (teacher-forced, free-running and inputless passes, greedy decodes
   for BLEU, MI, active units, 100 prior samples), timed for real; plus the IW bound over the
   whole set, extrapolated from (1) by padded token positions (each decoder pass costs in
   proportion to them). Their sum is the wall time of ``seqvae eval RUN --split test``.

The model is built at the PTB recipe's sizes with untrained weights: the IW cost does not depend
on the weights, but an untrained decoder never emits EOS, so the greedy decodes run to their
length limit (input length + 10): the measured non-IW part is an upper bound for a trained model.

No timing is asserted anywhere; absolute numbers depend on the machine and its load.

Usage (from the repository root)::

    python benchmarks/evaluation.py --data-dir ../shared/data/ptb
    python benchmarks/evaluation.py                     # the embedded synthetic corpus
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from seqvae.config import ModelConfig, TrainConfig
from seqvae.data.batching import collate, encode_split, sorted_batches
from seqvae.data.corpus import load_text_files
from seqvae.data.synthetic import DEFAULT_SIZES, write_corpus
from seqvae.data.tokenizers import WordTokenizer
from seqvae.evaluation import evaluate_split
from seqvae.measures import importance_weighted_log_likelihood
from seqvae.models.vae import build_model

from throughput import LSTMLanguageModel, max_rss_mib, seed_everything


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


@torch.no_grad()
def floor_scores(model: LSTMLanguageModel, batch, *, samples: int, chunk: int) -> torch.Tensor:
    """-log p(x) of each sentence repeated ``samples`` times, ``chunk`` copies per call."""
    scores = []
    for start in range(0, samples, chunk):
        count = min(chunk, samples - start)
        logits = model(batch.inputs.repeat(count, 1))
        vocab = logits.shape[-1]
        nll = F.cross_entropy(logits.reshape(-1, vocab), batch.targets.repeat(count, 1).reshape(-1), reduction="none")
        scores.append((nll.view(count * batch.num_sentences, -1) * batch.mask.repeat(count, 1)).sum(1))
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
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads(T); default: torch's choice")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of the summary")
    args = parser.parse_args(argv)
    for name in ("iw_samples", "eval_batch_size", "repeats"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be at least 1")
    return args


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    seed_everything(args.seed)
    train_sentences, test_sentences, source = load_splits(args.data_dir, args.seed)
    tokenizer = WordTokenizer.build(train_sentences)
    sequences = encode_split(tokenizer, test_sentences).sequences
    lengths = [len(sequence) for sequence in sequences]
    batches = [collate([sequences[i] for i in indices]) for indices in sorted_batches(lengths, batch_size=args.eval_batch_size)]
    total_positions = sum(batch.mask.numel() for batch in batches)
    probe = batches[len(batches) // 2]

    config = ModelConfig(embedding_dim=256, hidden_dim=256, latent_dim=32, injection=("initial_state", "concat"))
    seed_everything(args.seed)
    model = build_model(config, vocab_size=tokenizer.vocab_size).eval()
    seed_everything(args.seed)
    floor = LSTMLanguageModel(tokenizer.vocab_size, config.embedding_dim, config.hidden_dim).eval()
    chunk = max(1, min(50, 16_384 // probe.inputs.numel()))  # the chunk importance_weighted_log_likelihood uses

    iw_seconds, floor_seconds = [], []
    for repeat in range(args.repeats):
        generator = torch.Generator().manual_seed(args.seed + repeat)
        iw_seconds.append(
            timed(lambda: importance_weighted_log_likelihood(model, probe, num_samples=args.iw_samples, generator=generator))
        )
        floor_seconds.append(timed(lambda: floor_scores(floor, probe, samples=args.iw_samples, chunk=chunk)))
    iw_time, floor_time = statistics.median(iw_seconds), statistics.median(floor_seconds)
    iw_whole_set = iw_time * total_positions / probe.mask.numel()
    result = {
        "data": source,
        "vocab_size": tokenizer.vocab_size,
        "test_sentences": len(sequences),
        "test_tokens": sum(lengths) + len(lengths),
        "eval_batches": len(batches),
        "probe_batch": {"sentences": probe.num_sentences, "positions": probe.mask.shape[1], "tokens": probe.num_tokens},
        "iw_samples": args.iw_samples,
        "iw_chunk": chunk,
        "iw_sentences_per_s": probe.num_sentences / iw_time,
        "iw_sentence_samples_per_s": probe.num_sentences * args.iw_samples / iw_time,
        "floor_sentence_samples_per_s": probe.num_sentences * args.iw_samples / floor_time,
        "ratio_iw_floor": floor_time / iw_time,
        "iw_seconds_repeats": iw_seconds,
        "floor_seconds_repeats": floor_seconds,
        "iw_whole_test_set_s_extrapolated": iw_whole_set,
    }
    if not args.skip_full:
        rest = timed(
            lambda: evaluate_split(
                model, batches, tokenizer, iw_samples=0, prior_samples=args.prior_samples, seed=args.seed
            )
        )
        result["other_measures_whole_test_set_s"] = rest
        result["full_eval_s_estimate"] = rest + iw_whole_set
    result.update(
        threads=torch.get_num_threads(),
        machine=platform.processor() or platform.machine(),
        torch=torch.__version__,
        max_rss_mib=max_rss_mib(),
        parameters={"vae": sum(p.numel() for p in model.parameters()), "floor": sum(p.numel() for p in floor.parameters())},
    )
    if args.json:
        print(json.dumps(result))
    else:
        print_summary(result)
    return result


def print_summary(r: dict) -> None:
    probe = r["probe_batch"]
    print(f"data        {r['data']}: {r['test_sentences']} test sentences, {r['test_tokens']} tokens (words + EOS), vocabulary {r['vocab_size']}")
    print(f"model       LSTM/LSTM, embedding 256, hidden 256, latent 32 ({r['parameters']['vae']:,} parameters; floor {r['parameters']['floor']:,})")
    print(f"machine     {r['machine']}, {r['threads']} threads, torch {r['torch']}")
    print(
        f"IW batch    the median evaluation batch: {probe['sentences']} sentences, {probe['positions']} positions, "
        f"{probe['tokens']} tokens; K = {r['iw_samples']} in chunks of {r['iw_chunk']}"
    )
    print(
        f"IW-NLL      {r['iw_sentences_per_s']:.2f} sentences/s ({r['iw_sentence_samples_per_s']:,.0f} sentence-samples/s); "
        f"floor {r['floor_sentence_samples_per_s']:,.0f} sentence-samples/s; ratio IW/floor {r['ratio_iw_floor']:.3f}"
    )
    whole = r["iw_whole_test_set_s_extrapolated"]
    print(f"IW, whole test set (extrapolated by padded positions): {whole:,.0f} s = {whole / 3600:.2f} h")
    if "full_eval_s_estimate" in r:
        print(f"other measures, whole test set (measured): {r['other_measures_whole_test_set_s']:.0f} s")
        total = r["full_eval_s_estimate"]
        print(f"full seqvae eval on the test set: {total:,.0f} s = {total / 3600:.2f} h")
    print(f"max RSS     {r['max_rss_mib']:.0f} MiB")


if __name__ == "__main__":
    main()

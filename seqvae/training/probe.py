"""Measuring what a run will cost before planning it (recipes/text/run.py, seqvae.planning): the
seconds of a training step of the config's model on the corpus's own batches, and of the final
evaluation as a fixed part plus a part per importance sample. The probe's model is thrown away;
it takes the same steps a training would (same batches, same objective), so the times are those
the training will see on this machine and at its thread count."""

from __future__ import annotations

import time
from dataclasses import dataclass

import torch

from seqvae.config import Config
from seqvae.data.batching import bucketed_batches, collate
from seqvae.data.preparation import PreparedData
from seqvae.evaluation import evaluate_split
from seqvae.evaluation.elbo import evaluate_elbo
from seqvae.models.vae import build_model
from seqvae.training.optimization import build_optimizer
from seqvae.training.step import Precision, train_step


@dataclass(frozen=True)
class Probe:
    step_seconds: float
    """Mean seconds of a training step (after warm-up steps)."""
    steps_per_epoch: int
    validation_seconds: float
    """One per-epoch validation (``train.validation``'s cheapest measures: rec, KL, ELBO, AU)."""
    eval_fixed_seconds: float
    """The final evaluation's cost that does not grow with K (ELBO, MI, AU, BLEU, prior samples)."""
    eval_seconds_per_sample: float
    """What one more importance sample adds to the final evaluation."""


def _timed(function) -> float:
    start = time.perf_counter()
    function()
    return time.perf_counter() - start


def probe(config: Config, data: PreparedData, *, eval_splits: tuple[str, ...], steps: int = 50, warmup: int = 5,
          device: torch.device | None = None) -> Probe:
    """Time ``steps`` training steps of ``config``'s model (run once untimed after ``warmup``
    steps, then timed), and the evaluation of a subset of the first of ``eval_splits`` at K = 1
    and K = 33, scaled to the tokens of all of ``eval_splits``."""
    device = device or torch.device("cpu")
    torch.manual_seed(config.run.seed)
    tokenizer = data.tokenizer
    model = build_model(config.model, vocab_size=tokenizer.vocab_size, pad_id=tokenizer.pad_id, unk_id=tokenizer.unk_id).to(device)
    optimizer = build_optimizer(model.parameters(), learning_rate=config.train.learning_rate, device=device,
                                kind=config.train.optimizer)
    train_split = data.splits["train"]
    order = bucketed_batches(train_split.lengths, batch_size=config.train.batch_size, seed=config.run.seed, epoch=0,
                             pool_batches=config.train.bucket_batches)
    batches = [collate([train_split.sequences[i] for i in indices]).to(device) for indices in order[: warmup + steps]]
    precision = Precision(config.train.precision, device)
    model.train()

    def run(chosen):
        for batch in chosen:
            train_step(model, optimizer, batch, kl_weight=1.0, objective=config.objective, grad_clip=config.train.grad_clip,
                       precision=precision)

    # the timed batches are run once untimed first: the first step of a new sentence length builds
    # kernels for its shapes, a cost a training pays once per length while its kernels stay in
    # oneDNN's cache (1,024 kernels; in bf16 on a CPU a PTB training overflows it and pays some of
    # it again: the probe said 54 ms a step where the training ran at 64 to 85, which is why the
    # text recipe measures again at a tenth of its first stage; benchmarks/new_shapes.py)
    timed = batches[warmup:] or batches
    run(batches[:warmup] + timed)
    # a step's cost grows with its padded tokens (sentences x the longest): time per padded token
    # on the sample, times the epoch's mean padded tokens a step, so that a sample of longer or
    # shorter batches than the epoch's does not bias the estimate (30 random batches of the raw
    # embedded corpus: 66 ms a step unweighted against 49 ms in training)
    padded = lambda indices: len(indices) * (max(train_split.lengths[i] for i in indices) + 1)  # noqa: E731
    sample_tokens = sum(padded(indices) for indices in (order[warmup : warmup + steps] or order[:warmup]))
    epoch_tokens = sum(padded(indices) for indices in order) / len(order)
    step_seconds = _timed(lambda: run(timed)) / max(sample_tokens, 1) * epoch_tokens

    # the evaluation: a subset of about a tenth of the first split (at least 64 sentences), whose
    # cost at K = 1 and K = 33 gives the fixed part and the part per sample, scaled by tokens
    first = data.splits[eval_splits[0]]
    subset_size = min(len(first.sequences), max(64, len(first.sequences) // 10))
    subset = [collate(first.sequences[i : i + 64]).to(device) for i in range(0, subset_size, 64)]
    subset_tokens = sum(batch.num_tokens for batch in subset)
    scale = sum(data.splits[split].num_tokens for split in eval_splits) / max(subset_tokens, 1)
    measure = lambda k: _timed(lambda: evaluate_split(model, subset, tokenizer, iw_samples=k, prior_samples=0))  # noqa: E731
    one, many = measure(1), measure(33)
    per_sample = max(many - one, 0.0) / 32
    fixed = max(one - per_sample, 0.0) * scale
    # 100 prior samples decoded under each prior, and the homotopies' 50 paths of 7 points: about
    # 5.5 times the decoding of 100 samples, for each split
    decode = max(_timed(lambda: evaluate_split(model, subset[:1], tokenizer, iw_samples=0, prior_samples=100))
                 - one / len(subset), 0.0)
    fixed += 5.5 * decode * len(eval_splits)
    # the per-epoch validation: rec, KL, ELBO and active units over the validation set
    valid = data.splits["valid"]
    valid_subset = [collate(valid.sequences[i : i + 128]).to(device) for i in range(0, min(len(valid.sequences), 512), 128)]
    validation = _timed(lambda: evaluate_elbo(model, valid_subset)) * valid.num_tokens / max(
        sum(batch.num_tokens for batch in valid_subset), 1)
    return Probe(step_seconds=step_seconds, steps_per_epoch=len(order), validation_seconds=validation,
                 eval_fixed_seconds=fixed,
                 eval_seconds_per_sample=per_sample * scale)

"""A model without z (model.latent_dim = 0): exact NLL and perplexity, and the measures that need z
reported as absent."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch

from seqvae.data.batching import Batch
from seqvae.evaluation.sums import in_batch_order, perplexity
from seqvae.measures import teacher_forced_and_free_running_nll
from seqvae.models.vae import SeqVAE
from seqvae.progress import progress_bar

ABSENT_FOR_LANGUAGE_MODELS = (
    "rec", "kl", "elbo", "ppl_elbo", "nll_iw", "ppl_iw", "mi", "active_units", "kl_per_dimension",
    "nll_inputless", "bleu", "prior_distinct_1", "prior_distinct_2", "prior_self_bleu",
    "prior_log_likelihood_per_token", "mean_posterior_std",
)
"""The measures that need z: a language model reports them as absent (never as zero)."""

LANGUAGE_MODEL_NOTE = "a language model (model.latent_dim = 0) has no z"


@torch.no_grad()
def evaluate_language_model(model: SeqVAE, batches: Iterable[Batch], *, world=None) -> dict[str, Any]:
    """A model without z: its exact NLL, -log p(x) = -sum_t log p(x_t | x_<t) per sentence, and
    exact perplexity exp(total NLL / (words + EOS)); no bound and no sampling. ``world``: the
    batches shared among ranks as in :func:`evaluate_elbo`."""
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    records = []  # (batch index, NLL sum, sentences, tokens)
    try:
        for index, batch in enumerate(batches):
            if world is not None and index % world.size != world.rank:
                continue
            batch = batch.to(device)
            records.append((index, float(model(batch).reconstruction.sum()), batch.num_sentences, batch.num_tokens))
    finally:
        model.train(was_training)
    records = in_batch_order(records, world)
    nll_sum, sentences, tokens = 0.0, 0, 0
    for _, nll, count, predicted in records:  # in batch order, as one process adds them
        nll_sum += nll
        sentences += count
        tokens += predicted
    return {"nll": nll_sum / sentences, "ppl": perplexity(nll_sum, tokens), "sentences": sentences, "tokens": tokens}


@torch.no_grad()
def evaluate_split_language_model(
    model: SeqVAE, batches: list[Batch], tokenizer, *, progress: bool, words: int | None, world=None
) -> dict[str, Any]:
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    records = []  # (batch index, NLL sum, free-running NLL sum, words, sentences, tokens)
    try:
        for index, batch in enumerate(progress_bar(batches, desc="evaluating", disable=not progress)):
            if world is not None and index % world.size != world.rank:
                continue
            batch = batch.to(device)
            z = model.encode(batch).mean  # (B, 0)
            teacher, free = teacher_forced_and_free_running_nll(model.decoder, batch, z)
            counted = sum(
                len(tokenizer.decode(row[: length - 1]).split()) + 1
                for row, length in zip(batch.targets.tolist(), batch.lengths.tolist())
            )
            records.append((index, float(teacher.sum()), float(free.sum()), counted, batch.num_sentences, batch.num_tokens))
    finally:
        model.train(was_training)
    totals = {"nll": 0.0, "fr": 0.0}
    sentences = tokens = counted_words = 0
    for _, nll, free_running, counted, count, predicted in in_batch_order(records, world):
        totals["nll"] += nll
        totals["fr"] += free_running
        counted_words += counted
        sentences += count
        tokens += predicted
    result: dict[str, Any] = {"nll": totals["nll"] / sentences, "ppl": perplexity(totals["nll"], tokens)}
    if getattr(tokenizer, "kind", "word") != "word":
        words = words or counted_words
        result.update(ppl_per_word=perplexity(totals["nll"], words), words=words)
    result.update(
        nll_teacher_forced=totals["nll"] / sentences,
        nll_free_running=totals["fr"] / sentences,
        free_running_gap=(totals["fr"] - totals["nll"]) / sentences,
        sentences=sentences,
        tokens=tokens,
        absent=list(ABSENT_FOR_LANGUAGE_MODELS),
        absent_because=LANGUAGE_MODEL_NOTE,
        warnings=[],
    )
    return result

"""Evaluation measures, each by the field's definition (../shared/METRICS.md).

Reconstruction and KL are nats per sentence; perplexities divide the total NLL bound by the
number of predicted tokens (tokens + one EOS per sentence).
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any

import torch

from seqvae.config import PER_DIMENSION_FREE_BITS
from seqvae.data.batching import Batch
from seqvae.generation import ended, greedy_decode, sample_prior
from seqvae.measures import (
    active_units,
    corpus_bleu,
    diagnose,
    distinct_n,
    importance_weighted_log_likelihood,
    inputless_nll,
    linear_probe_accuracy,
    mutual_information,
    self_bleu,
    self_log_likelihood_per_token,
    teacher_forced_and_free_running_nll,
)
from seqvae.models.posterior import DiagonalGaussian, FlowPosterior
from seqvae.models.vae import SeqVAE
from seqvae.progress import progress_bar


RECONSTRUCTION_SLACK = 10
"""A reconstruction is decoded to at most its sentence's tokens (with <eos>) + this many."""

PRIOR_SAMPLE_LENGTH = 50
"""Tokens a prior sample is decoded to at most for the prior-sample measures."""


def free_bits_target(objective, latent_dim: int) -> float:
    """The total KL a free-bits objective aims at (0 without free bits): lambda per dimension times
    the dimensions, or lambda itself for the total-KL hinge."""
    if objective.free_bits in PER_DIMENSION_FREE_BITS:
        return objective.free_bits_lambda * latent_dim
    if objective.free_bits == "total_hinge":
        return objective.free_bits_lambda
    return 0.0


def perplexity(total_nll: float, num_tokens: int) -> float:
    """exp(total NLL over the set / total predicted tokens)."""
    return math.exp(total_nll / num_tokens)


@torch.no_grad()
def evaluate_elbo(
    model: SeqVAE,
    batches: Iterable[Batch],
    *,
    generator: torch.Generator | None = None,
    progress: bool = False,
    world=None,
) -> dict[str, float]:
    """Reconstruction, KL and the ELBO bound over a set, one z ~ q(z|x) per sentence; cheap
    enough for every epoch's validation.

    - rec: mean over sentences of -log p(x|z), z ~ q(z|x)
    - kl: mean over sentences of KL(q(z|x) || N(0, I)) (analytic)
    - elbo: rec + kl, the bound NLL <= rec + KL (Kingma & Welling 2014), nats per sentence
    - ppl_elbo: exp(sum(rec + kl) / tokens), tokens = words + EOS (Bowman et al. 2016)
    - mi: I(x; z) with the aggregate posterior over the whole set (Hoffman & Johnson 2016), the
      measure aggressive training watches; a second's work for a few thousand sentences
    - active_units (Burda et al. 2016) and mean_posterior_std, for the collapse diagnostics

    ``world`` (a :class:`seqvae.distributed.World` of several ranks): each rank scores batches
    rank, rank + W, ... and draws, for the batches it skips, the noise one process would have
    drawn for them, so every batch meets the z it meets in one process; the per-batch sums and
    posteriors are then gathered and added in batch order. The figures are those of one
    process, bit for bit, and no batch is counted twice or padded. ``generator`` is then needed
    (the ranks' default generators differ); a flow posterior is measured by one process.
    """
    batches = progress_bar(batches, desc="validating", disable=not progress)
    if model.is_language_model:
        return evaluate_language_model(model, batches, world=world)
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    records = []  # (batch index, rec sum, kl sum, posterior, sentences, tokens)
    try:
        for index, batch in enumerate(batches):
            if world is not None and index % world.size != world.rank:
                torch.randn((batch.num_sentences, model.latent_dim), generator=generator)  # this batch's z noise
                continue
            batch = batch.to(device)
            output = model(batch, generator=generator)
            records.append(
                (index, float(output.reconstruction.sum()), float(output.kl.sum()), _kept(output.posterior),
                 batch.num_sentences, batch.num_tokens)
            )
    finally:
        model.train(was_training)
    records = _in_batch_order(records, world)
    rec_sum = kl_sum = 0.0
    sentences = tokens = 0
    for _, rec, kl, _, count, predicted in records:  # in batch order, as one process adds them
        rec_sum += rec
        kl_sum += kl
        sentences += count
        tokens += predicted
    posteriors = [record[3] for record in records]
    aggregate = type(posteriors[0]).concatenate(posteriors)
    result = {
        "rec": rec_sum / sentences,
        "kl": kl_sum / sentences,
        "elbo": (rec_sum + kl_sum) / sentences,
        "ppl_elbo": perplexity(rec_sum + kl_sum, tokens),
    }
    if aggregate.has_density:
        result["mi"] = mutual_information(aggregate, generator=generator)
    return {
        **result,
        "active_units": active_units(aggregate.base.mean),
        "mean_posterior_std": float(aggregate.base.std.mean()),
        "sentences": sentences,
        "tokens": tokens,
    }


def _in_batch_order(records: list[tuple], world) -> list[tuple]:
    """Every rank's per-batch records (each beginning with its batch index), in batch order, on
    every rank; this rank's own when there is no ``world``."""
    if world is None:
        return records
    return sorted((record for part in world.gather(records) for record in part), key=lambda record: record[0])


def _kept(posterior):
    """A batch's posterior kept for the set's MI and active units: a Gaussian's moments on the
    CPU; a flow posterior (base moments and contexts, tensors of a few floats per sentence) on the
    model's device, where its flow is."""
    if isinstance(posterior, FlowPosterior):
        return posterior
    return DiagonalGaussian(mean=posterior.mean.cpu(), logvar=posterior.logvar.cpu())


def posterior_note(model: SeqVAE) -> str | None:
    """What the z measures mean for a flow posterior (None for the Gaussian)."""
    flow = model.posterior.flow if model.posterior is not None else None
    if flow is None:
        return None
    kind = "IAF" if flow.has_inverse else "planar"
    return (
        f"{kind} flow posterior: kl is the single-sample Monte-Carlo estimate log q(z|x) - log p(z) on z ~ q(z|x); "
        "active_units, mean_posterior_std and kl_base_per_dimension are of the base Gaussian q0(z0|x); "
        "reconstructions decode the image of the base mean"
        + ("; mi uses the flow's exact inverse" if flow.has_inverse else "")
    )


PLANAR_MI_ABSENT = (
    "a planar flow has no tractable inverse, so log q(z|x_j) at other sentences' codes, which the "
    "aggregate posterior of the MI needs, is not available"
)


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
    records = _in_batch_order(records, world)
    nll_sum, sentences, tokens = 0.0, 0, 0
    for _, nll, count, predicted in records:  # in batch order, as one process adds them
        nll_sum += nll
        sentences += count
        tokens += predicted
    return {"nll": nll_sum / sentences, "ppl": perplexity(nll_sum, tokens), "sentences": sentences, "tokens": tokens}


@torch.no_grad()
def _evaluate_split_language_model(
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
    for _, nll, free_running, counted, count, predicted in _in_batch_order(records, world):
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


@torch.no_grad()
def evaluate_split(
    model: SeqVAE,
    batches: list[Batch],
    tokenizer,
    *,
    iw_samples: int = 500,
    mi_group_size: int | None = None,
    prior_samples: int = 100,
    free_bits_target: float = 0.0,
    seed: int = 0,
    progress: bool = False,
    words: int | None = None,
    world=None,
) -> dict[str, Any]:
    """Every measure of a set, by the definitions of ../shared/METRICS.md:

    - rec, kl, elbo, ppl_elbo: as :func:`evaluate_elbo` (one z ~ q(z|x) per sentence);
      kl_per_dimension: the mean KL of each latent dimension
    - nll_iw, ppl_iw: the importance-weighted bound with K = ``iw_samples`` (Burda et al. 2016),
      nats per sentence and per predicted token (skipped when iw_samples = 0)
    - with a subword tokenizer, ppl_elbo_per_word and ppl_iw_per_word: the same total NLL bounds
      divided by words + EOS instead of subword tokens + EOS (``words``: the whitespace-separated
      words of the sentences' text, plus one per sentence, as ``EncodedSplit.words`` counts them;
      when not given, counted from the decoded references), comparable with word-level models
    - mi: I(x; z) with the aggregate posterior over the whole set, or over groups of
      ``mi_group_size`` (He et al. 2019's mini-batch variant), named in ``mi_aggregate``
    - active_units: dimensions whose posterior-mean variance is at least 0.01 (Burda et al. 2016)
    - nll_teacher_forced, nll_free_running, free_running_gap, nll_inputless: per sentence, from
      the posterior mean (the notes, section 3.2)
    - bleu: corpus BLEU of greedy decodes of the posterior means against the inputs
    - prior_distinct_1, prior_distinct_2, prior_self_bleu, prior_log_likelihood_per_token: of
      ``prior_samples`` sentences greedily decoded from z ~ N(0, I) (the notes, section 3.3)
    - mean_posterior_std and ``warnings``: the collapse / overload diagnostics of
      :func:`seqvae.measures.diagnose`, with the figures that triggered them

    A language model (``latent_dim = 0``) gets its exact ``nll`` and ``ppl``, the teacher-forced
    and free-running NLL, and the names of the measures that need z listed under ``absent``.

    ``world`` (several torchrun ranks, Gaussian posterior or language model): the batches are
    shared among the ranks as in :func:`evaluate_elbo`, each rank drawing the ELBO and IW noise of
    the batches it skips, and the per-batch figures are gathered and added in batch order; the
    set-level measures (MI, active units, BLEU, prior samples) are then computed on every rank from
    the same inputs. The result is one process's, bit for bit.
    """
    if model.is_language_model:
        return _evaluate_split_language_model(model, batches, tokenizer, progress=progress, words=words, world=world)
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    # One generator per measure, so that skipping or resizing one leaves the others' draws unchanged.
    elbo_generator, iw_generator, mi_generator, prior_generator = (
        torch.Generator().manual_seed(seed * 4 + i) for i in range(4)
    )
    records = []  # (batch index, {figure: sum}, KL per dimension, hypotheses, references, words, posterior, sentences, tokens)
    # the batches, then the two set-level stages that take seconds to minutes: MI and prior samples
    bar = progress_bar(total=len(batches) + 2, desc="evaluating", disable=not progress)
    try:
        for index, batch in enumerate(batches):
            bar.update(1)
            if world is not None and index % world.size != world.rank:  # another rank's: draw its noise
                torch.randn((batch.num_sentences, model.latent_dim), generator=elbo_generator)
                if iw_samples:
                    torch.randn((iw_samples, batch.num_sentences, model.latent_dim), generator=iw_generator)
                continue
            batch = batch.to(device)
            sums = {}
            posterior = model.encode(batch)
            z, kl = posterior.sample_kl(elbo_generator)  # analytic KL, or Monte Carlo with a flow
            rec = model.decoder.sequence_nll(batch.inputs, z, batch.targets, batch.mask)
            sums["rec"] = float(rec.sum())
            sums["kl"] = float(kl.sum())
            if iw_samples:
                log_likelihood = importance_weighted_log_likelihood(
                    model, batch, num_samples=iw_samples, generator=iw_generator
                )
                sums["iw"] = -float(log_likelihood.sum())
            # one greedy pass gives the free-running NLL and the decodes BLEU compares
            teacher, free, decoded = teacher_forced_and_free_running_nll(
                model.decoder, batch, posterior.mean, decode_length=int(batch.lengths.max()) + RECONSTRUCTION_SLACK
            )
            sums["tf"] = float(teacher.sum())
            sums["fr"] = float(free.sum())
            sums["inputless"] = float(inputless_nll(model.decoder, batch, posterior.mean).sum())
            batch_hypotheses, batch_references = [], []
            for ids, row, length in zip(decoded, batch.targets.tolist(), batch.lengths.tolist()):
                # each decode as if alone: at most its own sentence's tokens + the slack
                batch_hypotheses.append(tokenizer.decode(ids[: length + RECONSTRUCTION_SLACK]))
                batch_references.append(tokenizer.decode(row[: length - 1]))
            records.append((
                index, sums, posterior.base.kl_per_dimension().sum(0).cpu(), batch_hypotheses, batch_references,
                sum(len(reference.split()) + 1 for reference in batch_references), _kept(posterior),
                batch.num_sentences, batch.num_tokens,
            ))
    finally:
        model.train(was_training)
    totals = {"rec": 0.0, "kl": 0.0, "iw": 0.0, "tf": 0.0, "fr": 0.0, "inputless": 0.0}
    kl_per_dimension = torch.zeros(model.latent_dim)
    sentences = tokens = counted_words = 0
    posteriors, hypotheses, references = [], [], []
    for _, sums, batch_kl, batch_hypotheses, batch_references, counted, kept, count, predicted in _in_batch_order(records, world):
        for key, value in sums.items():  # in batch order, as one process adds them
            totals[key] += value
        kl_per_dimension += batch_kl
        hypotheses.extend(batch_hypotheses)
        references.extend(batch_references)
        counted_words += counted
        posteriors.append(kept)
        sentences += count
        tokens += predicted
    aggregate = type(posteriors[0]).concatenate(posteriors)
    note = posterior_note(model)
    result: dict[str, Any] = {
        "rec": totals["rec"] / sentences,
        "kl": totals["kl"] / sentences,
        "elbo": (totals["rec"] + totals["kl"]) / sentences,
        "ppl_elbo": perplexity(totals["rec"] + totals["kl"], tokens),
    }
    if iw_samples:
        result.update(nll_iw=totals["iw"] / sentences, ppl_iw=perplexity(totals["iw"], tokens), iw_samples=iw_samples)
    if getattr(tokenizer, "kind", "word") != "word":
        words = words or counted_words
        result["ppl_elbo_per_word"] = perplexity(totals["rec"] + totals["kl"], words)
        if iw_samples:
            result["ppl_iw_per_word"] = perplexity(totals["iw"], words)
        result["words"] = words
    bar.set_description("mutual information")
    if aggregate.has_density:
        result.update(
            mi=mutual_information(aggregate, group_size=mi_group_size, generator=mi_generator),
            mi_aggregate="whole set" if mi_group_size is None else f"groups of {mi_group_size}",
        )
    else:
        result.update(absent=["mi"], absent_because=PLANAR_MI_ABSENT)
    per_dimension_key = "kl_per_dimension" if note is None else "kl_base_per_dimension"
    result.update(
        active_units=active_units(aggregate.base.mean),
        nll_teacher_forced=totals["tf"] / sentences,
        nll_free_running=totals["fr"] / sentences,
        free_running_gap=(totals["fr"] - totals["tf"]) / sentences,
        nll_inputless=totals["inputless"] / sentences,
        bleu=corpus_bleu(hypotheses, references),
        **{per_dimension_key: [round(float(value) / sentences, 4) for value in kl_per_dimension]},
        sentences=sentences,
        tokens=tokens,
    )
    bar.update(1)
    bar.set_description("prior samples")
    if prior_samples:
        result.update(_prior_sample_measures(model, tokenizer, prior_samples, prior_generator))
    bar.update(1)
    bar.close()
    result["mean_posterior_std"] = float(aggregate.base.std.mean())
    if note is not None:
        result["posterior"] = note
    result["warnings"] = diagnose(
        kl=result["kl"],
        active=result["active_units"],
        mean_posterior_std=result["mean_posterior_std"],
        free_bits_target=free_bits_target,
    )
    return result


@torch.no_grad()
def _prior_sample_measures(model: SeqVAE, tokenizer, count: int, generator: torch.Generator) -> dict[str, float]:
    was_training = model.training
    model.eval()
    try:
        device = next(model.parameters()).device
        z = sample_prior(count, model.latent_dim, generator=generator).to(device)
        ids = greedy_decode(model.decoder, z, max_length=PRIOR_SAMPLE_LENGTH)
        sentences = [tokenizer.decode(row) for row in ids]
        done = ended(model.decoder, ids, PRIOR_SAMPLE_LENGTH)
        log_likelihood = self_log_likelihood_per_token(model.decoder, z, ids, ended=done)
    finally:
        model.train(was_training)
    return {
        "prior_distinct_1": distinct_n(sentences, 1),
        "prior_distinct_2": distinct_n(sentences, 2),
        "prior_self_bleu": self_bleu(sentences),
        "prior_log_likelihood_per_token": float(log_likelihood.mean()),
    }


def latent_probe(means: torch.Tensor, labels: list[dict], *, folds: int = 5, seed: int = 0) -> dict[str, Any]:
    """How well each known attribute can be read off the posterior means by a linear classifier:
    held-out accuracy by ``folds``-fold cross-validation and, beside it, the majority-class rate
    (:func:`seqvae.measures.linear_probe_accuracy`). ``labels``: one {attribute: value} per row."""
    accuracy, majority = {}, {}
    for attribute in labels[0]:
        values = [record[attribute] for record in labels]
        accuracy[attribute], majority[attribute] = linear_probe_accuracy(means, values, folds=folds, seed=seed)
    return {"probe_accuracy": accuracy, "probe_majority": majority, "probe_folds": folds}


def format_metrics(metrics: dict[str, Any]) -> list[str]:
    """One aligned ``name value`` line per measure, for printing; warnings each on a line."""
    lines = []
    for key, value in metrics.items():
        if key == "warnings":
            lines.extend(f"WARNING: {warning}" for warning in value)
            continue
        if key == "absent_because":
            continue
        if key == "absent":
            reason = metrics.get("absent_because", "")
            lines.append(f"{key:<18} {' '.join(value)}" + (f" ({reason})" if reason else ""))
            continue
        if isinstance(value, list):
            shown = " ".join(f"{item:.2f}" for item in value)
        elif isinstance(value, dict):
            shown = "  ".join(f"{name} {item:.3f}" for name, item in value.items())
        else:
            shown = f"{value:.4f}" if isinstance(value, float) else str(value)
        lines.append(f"{key:<18} {shown}")
    return lines

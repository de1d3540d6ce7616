"""Every measure of a set (``seqvae eval``), by the definitions of ../shared/METRICS.md."""

from __future__ import annotations

from typing import Any

import torch

from seqvae.data.batching import Batch
from seqvae.evaluation.elbo import PLANAR_MI_ABSENT, kept_posterior, posterior_note
from seqvae.evaluation.language_model import evaluate_split_language_model
from seqvae.evaluation.sums import in_batch_order, perplexity
from seqvae.generation import ended, greedy_decode, sample_prior
from seqvae.measures import (
    active_units,
    corpus_bleu,
    diagnose,
    distinct_n,
    importance_weighted_log_likelihoods,
    standard_normal_log_prob,
    inputless_nll,
    linear_probe_accuracy,
    mutual_information,
    self_bleu,
    self_log_likelihood_per_token,
    teacher_forced_and_free_running_nll,
)
from seqvae.models.vae import SeqVAE
from seqvae.progress import progress_bar

RECONSTRUCTION_SLACK = 10
"""A reconstruction is decoded to at most its sentence's tokens (with <eos>) + this many."""

PRIOR_SAMPLE_LENGTH = 50
"""Tokens a prior sample is decoded to at most for the prior-sample measures."""


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
    fitted_prior=None,
    real_reference: bool = False,
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
    - with ``real_reference`` (seqvae eval; not the per-epoch validation, where it would not change):
      real_distinct_1, real_distinct_2, real_self_bleu: the same of as many of the split's own
      sentences (:func:`spread_sample`), the reference the prior samples' figures are read against
      (self-BLEU grows with the number of sentences, so only figures of equal counts compare)
    - mean_posterior_std and ``warnings``: the collapse / overload diagnostics of
      :func:`seqvae.measures.diagnose`, with the figures that triggered them
    - with ``fitted_prior`` (a density r(z) fitted after training, seqvae.fitted_prior):
      nll_iw_fitted and ppl_iw_fitted, the IW bound of the same decoder with r(z) as its prior,
      from the same draws and decoder scores as nll_iw; and the prior-sample measures of
      ``prior_samples`` codes drawn from r(z), named fitted_prior_distinct_1 and so on

    A language model (``latent_dim = 0``) gets its exact ``nll`` and ``ppl``, the teacher-forced
    and free-running NLL, and the names of the measures that need z listed under ``absent``.

    ``world`` (several torchrun ranks, Gaussian posterior or language model): the batches are
    shared among the ranks as in :func:`evaluate_elbo`, each rank drawing the ELBO and IW noise of
    the batches it skips, and the per-batch figures are gathered and added in batch order; the
    set-level measures (MI, active units, BLEU, prior samples) are then computed on every rank from
    the same inputs. The result is one process's, bit for bit.
    """
    if model.is_language_model:
        return evaluate_split_language_model(model, batches, tokenizer, progress=progress, words=words, world=world)
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
                priors = (standard_normal_log_prob,) if fitted_prior is None else (standard_normal_log_prob, fitted_prior.log_prob)
                log_likelihood = importance_weighted_log_likelihoods(
                    model, batch, priors, num_samples=iw_samples, generator=iw_generator
                )
                sums["iw"] = -float(log_likelihood[0].sum())
                if fitted_prior is not None:
                    sums["iw_fitted"] = -float(log_likelihood[1].sum())
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
                sum(len(reference.split()) + 1 for reference in batch_references), kept_posterior(posterior),
                batch.num_sentences, batch.num_tokens,
            ))
    finally:
        model.train(was_training)
    totals = {"rec": 0.0, "kl": 0.0, "iw": 0.0, "iw_fitted": 0.0, "tf": 0.0, "fr": 0.0, "inputless": 0.0}
    kl_per_dimension = torch.zeros(model.latent_dim)
    sentences = tokens = counted_words = 0
    posteriors, hypotheses, references = [], [], []
    for _, sums, batch_kl, batch_hypotheses, batch_references, counted, kept, count, predicted in in_batch_order(records, world):
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
        if fitted_prior is not None:
            result.update(nll_iw_fitted=totals["iw_fitted"] / sentences, ppl_iw_fitted=perplexity(totals["iw_fitted"], tokens))
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
        if fitted_prior is not None:
            fitted = _prior_sample_measures(model, tokenizer, prior_samples, prior_generator, fitted_prior)
            result.update({f"fitted_{key}": value for key, value in fitted.items()})
            result["fitted_prior"] = f"{fitted_prior.components} components, {fitted_prior.covariance} covariance"
    if prior_samples and real_reference:
        real = spread_sample(references, prior_samples)
        result.update(real_distinct_1=distinct_n(real, 1), real_distinct_2=distinct_n(real, 2), real_self_bleu=self_bleu(real))
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


def spread_sample(sentences: list[str], count: int) -> list[str]:
    """``count`` of ``sentences`` spread evenly over their sorted order: a sample of the split that
    does not depend on how batches ordered it (the first sentences of length-bucketed batches
    would all be short ones)."""
    ordered = sorted(sentences)
    if count >= len(ordered):
        return ordered
    return [ordered[index * len(ordered) // count] for index in range(count)]


@torch.no_grad()
def _prior_sample_measures(model: SeqVAE, tokenizer, count: int, generator: torch.Generator, density=None) -> dict[str, float]:
    """Distinct-n, self-BLEU and log p(x|z) per token of greedy decodes of ``count`` codes drawn
    from N(0, I), or from ``density`` (a fitted prior)."""
    was_training = model.training
    model.eval()
    try:
        device = next(model.parameters()).device
        z = sample_prior(count, model.latent_dim, generator=generator) if density is None else density.sample(count, generator)
        z = z.to(device)
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

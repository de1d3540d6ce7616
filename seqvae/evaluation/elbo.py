"""The ELBO terms over a set, one z ~ q(z|x) per sentence: cheap enough for every epoch's validation."""

from __future__ import annotations

from collections.abc import Iterable

import torch

from seqvae.data.batching import Batch
from seqvae.evaluation.language_model import evaluate_language_model
from seqvae.evaluation.sums import in_batch_order, perplexity
from seqvae.measures import active_units, mutual_information
from seqvae.models.posterior import DiagonalGaussian, FlowPosterior
from seqvae.models.vae import SeqVAE
from seqvae.progress import progress_bar


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
                (index, float(output.reconstruction.sum()), float(output.kl.sum()), kept_posterior(output.posterior),
                 batch.num_sentences, batch.num_tokens)
            )
    finally:
        model.train(was_training)
    records = in_batch_order(records, world)
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


def kept_posterior(posterior):
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

"""Evaluation measures, each by the field's definition (../shared/METRICS.md).

Reconstruction and KL are nats per sentence; perplexities divide the total NLL bound by the
number of predicted tokens (tokens + one EOS per sentence).
"""

from __future__ import annotations

import math
from collections.abc import Iterable

import torch

from seqvae.data.batching import Batch
from seqvae.losses import sequence_nll
from seqvae.models.vae import SeqVAE


def perplexity(total_nll: float, num_tokens: int) -> float:
    """exp(total NLL over the set / total predicted tokens)."""
    return math.exp(total_nll / num_tokens)


@torch.no_grad()
def evaluate_elbo(
    model: SeqVAE, batches: Iterable[Batch], *, generator: torch.Generator | None = None
) -> dict[str, float]:
    """Reconstruction, KL and the ELBO bound over a set, one z ~ q(z|x) per sentence.

    - rec: mean over sentences of -log p(x|z), z ~ q(z|x)
    - kl: mean over sentences of KL(q(z|x) || N(0, I)) (analytic)
    - elbo: rec + kl, the bound NLL <= rec + KL (Kingma & Welling 2014), nats per sentence
    - ppl_elbo: exp(sum(rec + kl) / tokens), tokens = words + EOS (Bowman et al. 2016)
    """
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    rec_sum = kl_sum = 0.0
    sentences = tokens = 0
    try:
        for batch in batches:
            batch = batch.to(device)
            output = model(batch, generator=generator)
            rec_sum += float(sequence_nll(output.logits, batch.targets, batch.mask).sum())
            kl_sum += float(output.posterior.kl().sum())
            sentences += batch.num_sentences
            tokens += batch.num_tokens
    finally:
        model.train(was_training)
    return {
        "rec": rec_sum / sentences,
        "kl": kl_sum / sentences,
        "elbo": (rec_sum + kl_sum) / sentences,
        "ppl_elbo": perplexity(rec_sum + kl_sum, tokens),
        "sentences": sentences,
        "tokens": tokens,
    }

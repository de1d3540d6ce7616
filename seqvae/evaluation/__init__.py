"""Evaluation measures, each by the field's definition (../shared/METRICS.md).

Reconstruction and KL are nats per sentence; perplexities divide the total NLL bound by the
number of predicted tokens (tokens + one EOS per sentence).

- ``split``: every measure of a set, :func:`evaluate_split` (``seqvae eval``), and the latent probe;
- ``elbo``: the ELBO terms alone, :func:`evaluate_elbo` (every epoch's validation);
- ``language_model``: a model without z, exact NLL and perplexity;
- ``sums``: the free-bits target, perplexity, and figures of ranks put back in batch order;
- ``printing``: measures as aligned lines.
"""

from seqvae.evaluation.elbo import PLANAR_MI_ABSENT, evaluate_elbo, posterior_note
from seqvae.evaluation.language_model import ABSENT_FOR_LANGUAGE_MODELS, LANGUAGE_MODEL_NOTE, evaluate_language_model
from seqvae.evaluation.printing import format_metrics
from seqvae.evaluation.split import PRIOR_SAMPLE_LENGTH, RECONSTRUCTION_SLACK, evaluate_split, latent_probe
from seqvae.evaluation.sums import free_bits_target, perplexity

__all__ = [
    "ABSENT_FOR_LANGUAGE_MODELS",
    "LANGUAGE_MODEL_NOTE",
    "PLANAR_MI_ABSENT",
    "PRIOR_SAMPLE_LENGTH",
    "RECONSTRUCTION_SLACK",
    "evaluate_elbo",
    "evaluate_language_model",
    "evaluate_split",
    "format_metrics",
    "free_bits_target",
    "latent_probe",
    "perplexity",
    "posterior_note",
]

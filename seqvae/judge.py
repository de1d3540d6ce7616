"""Generated text judged by an independent language model: a run without z (model.latent_dim = 0),
trained on the same corpus as the model whose text it judges (the judge).

Forward perplexity (Zhao et al. 2018, "Adversarially Regularized Autoencoders", section 6;
Cífka et al. 2018, "Eval all, trust a few, do wrong to none: Comparing sentence generation
models") of a set of generated sentences x_1..x_N is the judge's perplexity of them,

    PPL_fwd = exp( sum_i -log p_LM(x_i) / sum_i T_i ),

T_i counting the tokens of x_i and its end. It is low when the sentences read like the corpus to
the judge (fluency), and also when they are generic and repeated: greedy decodes of a collapsed
model score well. Reverse perplexity (the same sources) catches that: an LM of the judge's
architecture and vocabulary is trained on the N generated sentences alone, then scored on real
held-out sentences,

    PPL_rev = exp( sum_j -log p_LM'(y_j) / sum_j T_j ),  LM' trained on x_1..x_N, y_j real.

It is low only if the generated set covers the corpus's variety as well as being fluent. Both are
taken here with the judge's tokenizer; the reverse LM is trained with the judge's config (sizes,
optimiser, batch), for ``epochs`` epochs, a tenth of the samples held out for its best checkpoint.
"""

from __future__ import annotations

import contextlib
import math
import tempfile
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch

from seqvae.data.batching import collate
from seqvae.data.preparation import model_length_limit
from seqvae.errors import SeqVAEError
from seqvae.progress import progress_bar

REVERSE_SAMPLES = 10000
"""Generated sentences the reverse LM is trained on, by default."""
REVERSE_EPOCHS = 5
"""Epochs of the reverse LM's training, by default: brief, the same for every model compared."""
JUDGED_SAMPLES = 1000
"""Prior samples whose forward perplexity is taken, by default."""
DECODE_CHUNK = 500
"""Codes decoded at once (the logits of a step are chunk x vocabulary)."""


def load_judge(path: str | Path, *, device: str = "auto"):
    """The judge: a language-model run (model.latent_dim = 0); a one-line error for anything else."""
    from seqvae.runs import load_run

    judge = load_run(path, device=device)
    if not judge.model.is_language_model:
        raise SeqVAEError(
            f"{path}: --lm needs a language model run (model.latent_dim = 0) trained on the same corpus; this run has z"
        )
    return judge


@torch.no_grad()
def sentence_scores(judge, sentences: list[str], *, batch_size: int = 256) -> tuple[torch.Tensor, torch.Tensor]:
    """-log p_LM(x) of each sentence (nats, float64) and its tokens T (its end included), in input
    order. Sentences may be empty (the end alone); longer ones than the judge can read (a
    Transformer's positions) are cut there."""
    limit = model_length_limit(judge.config.model)
    ids = [judge.tokenizer.encode(sentence)[: limit or None] for sentence in sentences]
    order = sorted(range(len(ids)), key=lambda index: len(ids[index]))
    nll = torch.zeros(len(ids), dtype=torch.float64)
    was_training = judge.model.training
    judge.model.eval()
    try:
        for start in range(0, len(order), batch_size):
            chosen = order[start : start + batch_size]
            batch = collate([ids[index] for index in chosen]).to(judge.device)
            nll[chosen] = judge.model(batch).reconstruction.double().cpu()
    finally:
        judge.model.train(was_training)
    tokens = torch.tensor([len(sequence) + 1 for sequence in ids], dtype=torch.float64)
    return nll, tokens


def forward_perplexity(judge, sentences: list[str]) -> float:
    """exp(sum_i -log p_LM(x_i) / sum_i T_i) of the judge over ``sentences`` (module docstring)."""
    if not sentences:
        raise SeqVAEError("forward perplexity needs at least one sentence")
    nll, tokens = sentence_scores(judge, sentences)
    return math.exp(float(nll.sum() / tokens.sum()))


def reverse_perplexity(
    judge,
    samples: list[str],
    real_file: str | Path,
    *,
    epochs: int = REVERSE_EPOCHS,
    seed: int = 0,
    work_dir: str | Path | None = None,
    progress: bool = False,
) -> dict[str, Any]:
    """Train an LM of the judge's config and vocabulary on ``samples`` (a tenth held out for its
    best checkpoint), then its perplexity on the real sentences of ``real_file`` (module
    docstring): {"reverse_ppl", "reverse_samples", "reverse_epochs"}. The LM's run directory lives
    in ``work_dir`` (a temporary directory, removed after, by default)."""
    from seqvae.runs import load_run
    from seqvae.training import train

    samples = [sentence for sentence in samples if sentence.strip()]  # a corpus line must hold a sentence
    if len(samples) < 20:
        raise SeqVAEError(f"reverse perplexity needs at least 20 non-empty generated sentences; there are {len(samples)}")
    held_out = max(1, len(samples) // 10)
    with tempfile.TemporaryDirectory() if work_dir is None else contextlib.nullcontext(work_dir) as folder:
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "samples-train.txt").write_text("\n".join(samples[held_out:]) + "\n", encoding="utf-8")
        (folder / "samples-valid.txt").write_text("\n".join(samples[:held_out]) + "\n", encoding="utf-8")
        config = judge.config
        config = replace(
            config,
            run=replace(config.run, dir=str(folder / "reverse-lm"), seed=seed, threads=torch.get_num_threads()),
            data=replace(config.data, train=str(folder / "samples-train.txt"), valid=str(folder / "samples-valid.txt"), test=str(real_file)),
            tokenizer=replace(config.tokenizer, from_run=str(judge.run_dir)),
            train=replace(config.train, epochs=epochs, max_steps=0, max_minutes=0.0, init_from=""),
        )
        train(config, overwrite=True, progress=progress)
        scored = load_run(folder / "reverse-lm", device=str(judge.device)).evaluate("test", progress=progress, homotopy_pairs=0)
    return {"reverse_ppl": scored["ppl"], "reverse_samples": len(samples), "reverse_epochs": epochs}


def judged_measures(
    run,
    judge,
    split: str,
    sentences: list[str],
    *,
    samples: int = JUDGED_SAMPLES,
    reverse_samples: int = REVERSE_SAMPLES,
    reverse_epochs: int = REVERSE_EPOCHS,
    priors: tuple[str, ...] = ("standard",),
    seed: int = 0,
    progress: bool = False,
    fitted_temperature: float = 1.0,
) -> dict[str, Any]:
    """The judge's figures for a run's split: its perplexity of the real sentences (the reference,
    ``lm_real_ppl``) and, for each prior (``standard``, ``fitted``), the forward perplexity of
    ``samples`` greedy decodes of prior codes and the reverse perplexity of ``reverse_samples``
    (0 skips it), scored on the split's file; the fitted prior at ``fitted_temperature``."""
    result: dict[str, Any] = {"lm_judge": str(judge.run_dir), "lm_real_ppl": forward_perplexity(judge, sentences)}
    real_file = getattr(run.config.data, split)
    for prior in priors:
        prefix = "prior" if prior == "standard" else f"{prior}_prior"
        count = max(samples, reverse_samples)
        codes = run.prior(count, seed=seed, prior=prior, temperature=fitted_temperature if prior == "fitted" else 1.0)
        decoded = [
            sentence
            for start in progress_bar(range(0, count, DECODE_CHUNK), desc=f"decoding {prior} prior samples", disable=not progress)
            for sentence in run.decode(codes[start : start + DECODE_CHUNK])
        ]
        result[f"{prefix}_lm_forward_ppl"] = forward_perplexity(judge, decoded[:samples])
        if reverse_samples:
            reverse = reverse_perplexity(judge, decoded[:reverse_samples], real_file, epochs=reverse_epochs, seed=seed, progress=progress)
            result[f"{prefix}_lm_reverse_ppl"] = reverse["reverse_ppl"]
    result["lm_samples"] = samples
    if reverse_samples:
        result.update(lm_reverse_samples=reverse_samples, lm_reverse_epochs=reverse_epochs)
    return result

"""Homotopy measures of a run (Bowman et al. 2016; the notes, section 3.3): do paths between the
codes of two sentences start and end at those sentences, and come closer to the second on the way?"""

from __future__ import annotations

from typing import Any

import torch

from seqvae.data.preparation import max_tokens
from seqvae.errors import SeqVAEError
from seqvae.generation import PATHS
from seqvae.measures import homotopy_endpoint_bleu, homotopy_falling_share


def homotopy_measures(
    run, sentences: list[str], *, pairs: int = 50, steps: int = 7, path: str = "linear", seed: int = 0, judge=None
) -> dict[str, Any]:
    """:meth:`seqvae.runs.Run.homotopies` over ``pairs`` random pairs of ``sentences``; with a
    ``judge`` (seqvae.judge), path fluency: the forward perplexity of the decodes of the inner
    points (0 < t < 1) beside that of the ends' decodes, the path's own reference."""
    run._needs_z("interpolate between")
    if len(sentences) < 2 or pairs < 1 or steps < 2:
        raise SeqVAEError("homotopies need at least two sentences, one pair and two steps")
    generator = torch.Generator().manual_seed(seed)
    chosen = [torch.randperm(len(sentences), generator=generator)[:2].tolist() for _ in range(pairs)]
    texts = [(sentences[i], sentences[j]) for i, j in chosen]
    means = run.encode([sentence for pair in texts for sentence in pair]).mean.view(pairs, 2, -1)
    codes = torch.cat([PATHS[path](first, second, steps)[1] for first, second in means])  # (P * steps, Z)
    decoded = run.decode(codes)
    paths = [decoded[index * steps : (index + 1) * steps] for index in range(pairs)]
    limit = max_tokens(run.config)
    known = [tuple(run.tokenizer.decode(run.tokenizer.encode(s)[: limit or None]) for s in pair) for pair in texts]
    result = {
        "homotopy_endpoint_bleu": homotopy_endpoint_bleu(paths, known),
        "homotopy_falling_share": homotopy_falling_share(paths, known),
        "homotopy_pairs": pairs,
        "homotopy_steps": steps,
        "homotopy_path": path,
    }
    if judge is not None and steps > 2:
        from seqvae.judge import forward_perplexity

        result["homotopy_path_lm_forward_ppl"] = forward_perplexity(judge, [s for decodes in paths for s in decodes[1:-1]])
        result["homotopy_endpoint_lm_forward_ppl"] = forward_perplexity(judge, [s for decodes in paths for s in (decodes[0], decodes[-1])])
    return result

"""Word dropout (Bowman et al. 2016): weakening the decoder's inputs so that it must use z."""

from __future__ import annotations

import torch


def word_dropout(
    inputs: torch.Tensor,
    mask: torch.Tensor,
    *,
    rate: float,
    unk_id: int,
    generator: torch.Generator | None = None,
    uniforms: torch.Tensor | None = None,
) -> torch.Tensor:
    """Replace decoder input tokens by <unk> with probability ``rate`` (Bowman et al. 2016).

    inputs (B, T) begin with <bos>, which is never replaced, nor is padding; the targets and the
    encoder input are separate tensors and untouched. rate = 1 gives the inputless decoder.
    Call it in training only. ``uniforms`` (B, T): the U(0, 1) draws, when drawn beforehand
    (seqvae.distributed.StepNoise); a token is dropped where its draw is below the rate.
    """
    if rate <= 0.0:
        return inputs
    droppable = mask.clone()
    droppable[:, 0] = False  # the begin token
    if rate >= 1.0:
        drop = droppable
    else:
        noise = uniforms if uniforms is not None else torch.rand(inputs.shape, generator=generator, device=inputs.device)
        drop = droppable & (noise < rate)
    return inputs.masked_fill(drop, unk_id)

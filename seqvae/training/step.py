"""The training step: forward with word dropout, the objective, backward, clipping and the
optimizer step, in the precision ``train.precision`` asks for, eagerly or replayed from CUDA graphs,
with a check that nothing diverged before anything is updated."""

from __future__ import annotations

import contextlib
import functools
import math

import torch

from seqvae.config import ObjectiveConfig
from seqvae.cuda_graphs import StepGraphs
from seqvae.data.batching import Batch
from seqvae.distributed import RankShare
from seqvae.losses import LossTerms, Objective, elbo_objective
from seqvae.models.vae import SeqVAE
from seqvae.rate_constraint import MinimumDesiredRate


class Precision:
    """``train.precision``: autocast to bf16 or fp16 for the forward on CUDA, with a gradient
    scaler for fp16 (its loss scale skips the steps whose gradients overflow); fp32 does nothing."""

    def __init__(self, name: str, device: torch.device) -> None:
        if name not in ("fp32", "bf16", "fp16"):  # "auto" is decided before a step is built (seqvae.precision)
            raise ValueError(f"train.precision={name!r}: a step runs in fp32, bf16 or fp16; resolve auto first")
        self.name = name
        self.device = device
        self.dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(name)
        self.scaler = torch.amp.GradScaler(device.type) if name == "fp16" else None

    def autocast(self, *, cache: bool = True):
        """The forward's autocast; ``cache=False`` for a CUDA graph's capture, in which autocast's
        cache of cast weights must not be kept."""
        if self.dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=self.dtype, cache_enabled=cache)


def train_step(
    model: SeqVAE,
    optimizer: torch.optim.Optimizer,
    batch: Batch,
    *,
    kl_weight: float,
    objective: ObjectiveConfig,
    grad_clip: float,
    rate_constraint: MinimumDesiredRate | None = None,
    update: list[torch.nn.Parameter] | None = None,
    share: RankShare | None = None,
    precision: Precision | None = None,
    graphs: StepGraphs | None = None,
) -> LossTerms:
    """One update: forward with word dropout, ELBO with free bits (and the rate constraint, whose
    multiplier then takes its ascent step), backward, clipping, step.

    ``update``: the parameters this step changes (default all). The others keep their values and
    their optimizer state (Adam skips a parameter without a gradient); aggressive training updates
    the encoder alone, then the decoder alone.

    ``share``: this process is one rank of a data-parallel training and ``batch`` its rows of the
    global batch; the returned figures are the global batch's. ``precision``: autocast (and the
    fp16 gradient scaler) of ``train.precision``. ``graphs``: the forward, the objective and the
    backward replayed from CUDA graphs (``train.cuda_graphs``, seqvae.cuda_graphs); they hold the
    objective and the precision they were made with, and take no ``update``, ``share``, rate
    constraint or gradient scaler."""
    scaler = precision.scaler if precision is not None else None
    if graphs is not None:
        if update is not None or share is not None or rate_constraint is not None or scaler is not None:
            raise ValueError("a CUDA-graph step updates every parameter of one process, without a rate constraint or fp16")
        goal = graphs.forward_backward(batch, kl_weight)
    else:
        goal = forward_backward(
            model, optimizer, batch, kl_weight=kl_weight, objective=objective, rate_constraint=rate_constraint,
            share=share, precision=precision,
        )
    figures = goal.figures
    parameters = list(model.parameters()) if update is None else update
    if update is not None:
        chosen = {id(parameter) for parameter in update}
        for parameter in model.parameters():
            if id(parameter) not in chosen:
                parameter.grad = None
    if share is not None:
        if share.forward is None:
            share.average_gradients(parameters)
        if rate_constraint is not None:
            share.average_gradients([rate_constraint.multiplier])
        figures = share.reduce(figures)
    if scaler is not None:
        scaler.unscale_(optimizer)
        if rate_constraint is not None and rate_constraint.multiplier.grad is not None:
            rate_constraint.multiplier.grad /= scaler.get_scale()
    if grad_clip > 0:
        norm = torch.nn.utils.clip_grad_norm_(parameters, grad_clip)
    else:
        norm = torch.nn.utils.get_total_norm([parameter.grad for parameter in parameters if parameter.grad is not None])
    # The step's one read from the device: its figures and the gradient norm (and a flow's KL
    # spread), after the backward pass and the clipping are queued (a read before them would
    # stall a GPU's queue mid-step).
    spread = [goal.kl_std] if goal.kl_std is not None else []
    *values, norm_value = torch.cat([figures, *spread, norm.detach().double().reshape(1)]).tolist()
    terms = goal.terms(values)
    terms.grad_norm = norm_value
    # with fp16, an overflowing gradient is the scaler's to skip; a loss that is not finite is divergence
    if not (math.isfinite(terms.loss) and (scaler is not None or math.isfinite(norm_value))):  # nothing is updated
        optimizer.zero_grad(set_to_none=True)
        raise NonFiniteStep(terms.loss, norm_value)
    if scaler is not None:
        scaler.step(optimizer)
        scaler.update()
    else:
        optimizer.step()
    if rate_constraint is not None:
        rate_constraint.ascend()
    return terms


def forward_backward(
    model, optimizer, batch, *, kl_weight, objective, rate_constraint=None, share=None, precision=None, capturing=False
) -> Objective:
    """train_step's forward, objective and backward (gradients set afresh), eagerly or, with
    ``capturing``, as a CUDA graph records it (autocast without its cache of cast weights)."""
    forward = share.forward if share is not None and share.forward is not None else model
    autocast = precision.autocast(cache=not capturing) if precision is not None else contextlib.nullcontext()
    scaler = precision.scaler if precision is not None else None
    with autocast:
        output = forward(batch, word_dropout_rate=objective.word_dropout, noise=share.noise if share is not None else None)
    goal = elbo_objective(
        output,
        batch,
        kl_weight=kl_weight,
        free_bits=objective.free_bits,
        free_bits_lambda=objective.free_bits_lambda,
        rate_constraint=rate_constraint,
        batch_mean=share.batch_mean if share is not None else None,
    )
    optimizer.zero_grad(set_to_none=True)
    total = goal.total if share is None else goal.total * share.weight
    (scaler.scale(total) if scaler is not None else total).backward()
    return goal


def graphed_step(model, optimizer, *, objective, precision, width_multiple: int = 8, capture=None) -> StepGraphs:
    """The :class:`~seqvae.cuda_graphs.StepGraphs` of ``train.cuda_graphs``: train_step's own
    forward, objective and backward, recorded per batch shape (``capture``: the recording, CUDA
    graphs on CUDA by default)."""
    step = functools.partial(forward_backward, model, optimizer, objective=objective, precision=precision, capturing=True)
    return StepGraphs(model, step, width_multiple=width_multiple, capture=capture)


class NonFiniteStep(Exception):
    """A step whose loss or gradient norm is not finite: training has diverged. Raised before the
    optimizer step, so the parameters keep their last finite values."""

    def __init__(self, loss: float, gradient_norm: float) -> None:
        super().__init__(f"loss {loss:.4g}, gradient norm {gradient_norm:.4g}")
        self.loss, self.gradient_norm = loss, gradient_norm


@contextlib.contextmanager
def frozen(parameters: list[torch.nn.Parameter]):
    """No gradients for these parameters inside the block (backward skips their weight gradients)."""
    flags = [parameter.requires_grad for parameter in parameters]
    for parameter in parameters:
        parameter.requires_grad_(False)
    try:
        yield
    finally:
        for parameter, flag in zip(parameters, flags):
            parameter.requires_grad_(flag)

"""CUDA graphs for the training step (``train.cuda_graphs``): the forward pass, the objective and
the backward pass of a batch shape are captured once and then replayed with one launch.

Why: on a GPU the PTB-sized step is bound by the host, not by the GPU. On an H200 a VAE step at
batch 32 took 7.1 ms, of which its kernels filled 3.3 ms; about 200 kernel launches (170 of them
the two LSTMs' per-time-step kernels) cost 1.2-1.6 ms of launch calls alone, and the language
model's step took 3.8 ms at batch 32 and at batch 128 alike (benchmarks/README.md). A graph
replays the whole recorded forward and backward pass without the host issuing each kernel.

What a replay does, and what stays eager:

- captured (one graph per batch shape): word dropout, the encoder, q(z|x), the draw of z, the
  decoder and its output layer, the objective (the KL weight is read from a device tensor, so
  annealing needs no new capture) and the backward pass, which writes the gradients into buffers
  the graph owns;
- eager, after the replay: the gradient clipping, the step's one read of its figures and the
  optimizer step (fused Adam). A learning-rate decay, a return to best.pt (whose weights are
  copied into the same parameter tensors) and validation need no new capture.

Shapes: a graph is captured for each (sentences, width) of the training batches, the width padded
up to a multiple of ``train.cuda_graph_width`` so that a corpus has few widths. The padding is
exact: the targets there are masked, the LSTM encoder reads each sentence's state at its last real
token, and nothing before a position reads what follows it (tests/test_cuda_graphs.py). It does
change the random draws, since word dropout draws one uniform per position of the padded width.
Each graph holds its own memory pool (its activations and gradients): about the memory of one
eager step of that shape, times the number of shapes.

Randomness and resume: dropout masks, word dropout and the draw of z come from the default CUDA
generator, which PyTorch registers with a graph, so each replay draws afresh. The warm-up runs a
capture needs are undone: the generator's state and the model's buffers (BatchNorm's running
statistics) are put back, so capturing a shape never changes training, and a run resumed from a
checkpoint, which captures its shapes again, replays the same draws as the run that went on.

Not supported (a one-line error when training starts): the CPU, the adaptive output layer (which
picks its tail clusters from the batch's words: shapes the host must read), a bidirectional LSTM
encoder (packed sequences of data-dependent lengths), fp16 (the gradient scaler's skipped steps),
aggressive training, the minimum-desired-rate constraint and torchrun.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace

import torch

from seqvae.data.batching import Batch
from seqvae.data.tokenizers import PAD_ID
from seqvae.errors import SeqVAEError
from seqvae.losses import Objective


__all__ = ["CudaCapture", "ReplayedEagerly", "StepGraphs", "check_cuda_graphs", "pad_into", "padded_shape", "static_batch"]

WARMUPS = 3
"""Eager runs on a side stream before a capture, as PyTorch's documentation asks (kernel
selection, cuDNN workspaces and the allocator settle before the recording)."""


def check_cuda_graphs(config, device: torch.device, *, launched: bool) -> None:
    """Refuse, with one line naming the key, a training that ``train.cuda_graphs`` cannot capture."""
    if not config.train.cuda_graphs:
        return
    reasons = []
    if device.type != "cuda" and not _cpu_stand_in:
        reasons.append(f"needs a CUDA device (run.device resolved to {device.type})")
    if config.model.latent_dim > 0 and config.model.encoder == "lstm" and config.model.bidirectional:
        reasons.append("does not take a bidirectional LSTM encoder (packed sequences of data-dependent lengths)")
    if config.model.output_layer != "softmax":
        reasons.append("needs model.output_layer=softmax (the adaptive layer's shapes depend on the batch's words)")
    if config.train.precision == "fp16":
        reasons.append("does not take train.precision=fp16 (use bf16 or fp32)")
    if config.train.aggressive:
        reasons.append("does not take train.aggressive")
    if config.objective.free_bits == "mdr":
        reasons.append("does not take objective.free_bits=mdr")
    if launched:
        reasons.append("does not run under torchrun")
    if reasons:
        raise SeqVAEError(f"train.cuda_graphs: {'; '.join(reasons)}; set train.cuda_graphs=false")


_cpu_stand_in = False
"""Tests set this to train with ``train.cuda_graphs`` on the CPU, through :class:`ReplayedEagerly`."""


class CudaCapture:
    """Records ``run`` into a CUDA graph: WARMUPS eager runs on a side stream, then the capture.
    Returns the replay and the tensors ``run`` returned during the capture (the graph's outputs,
    which every replay overwrites). Neither the warm-ups nor the capture change the default CUDA
    generator's state: it is put back, so a capture draws nothing that training would see."""

    def __init__(self, device: torch.device) -> None:
        self.device = device

    def __call__(self, run: Callable[[], list]) -> tuple[Callable[[], None], list]:
        state = torch.cuda.get_rng_state(self.device)
        current = torch.cuda.current_stream(self.device)
        side = torch.cuda.Stream(self.device)
        side.wait_stream(current)
        with torch.cuda.stream(side):
            for _ in range(WARMUPS):
                run()
        current.wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            outputs = run()
        torch.cuda.set_rng_state(state, self.device)
        return graph.replay, outputs


class ReplayedEagerly:
    """The capture's contract without CUDA, for tests on the CPU: ``run`` is kept and called again
    at every replay, which copies its results into the tensors the capture returned. So a step
    that baked a value in at capture (a Python number instead of a static tensor) replays it stale
    here as on a GPU, and a test comparing with eager training sees it. The warm-ups and the
    capture leave the CPU generator as they found it, as :class:`CudaCapture` does the CUDA one.
    What it cannot catch: a read of a device value inside the step (``float(tensor)``), which runs
    here at every replay but makes a CUDA capture fail (CUDA syncs are not allowed while capturing)."""

    def __init__(self) -> None:
        self.captures = 0

    def __call__(self, run: Callable[[], list]) -> tuple[Callable[[], None], list]:
        state = torch.get_rng_state()
        for _ in range(WARMUPS):
            run()
        outputs = [None if value is None else value.detach().clone() for value in run()]
        torch.set_rng_state(state)
        self.captures += 1

        def replay() -> None:
            for kept, value in zip(outputs, run()):
                if kept is not None:
                    kept.copy_(value)

        return replay, outputs


def capturer_for(device: torch.device):
    """The capture of ``device``: CUDA graphs, or the eager stand-in where tests allow it."""
    if device.type == "cuda":
        return CudaCapture(device)
    if _cpu_stand_in:
        return ReplayedEagerly()
    raise SeqVAEError(f"train.cuda_graphs: needs a CUDA device, not {device.type}")


@dataclass
class _Captured:
    """One batch shape's graph: its static inputs, KL weight and outputs, and its gradients."""

    batch: Batch
    kl_weight: torch.Tensor
    replay: Callable[[], None]
    objective: Objective
    gradients: list[torch.Tensor | None]


class StepGraphs:
    """train_step's forward, objective and backward, replayed from one graph per batch shape.

    ``step(batch, kl_weight=...)`` is what is recorded: the eager step's forward, objective and
    backward (seqvae.training.graphed_step passes train_step's own, with autocast's cache off),
    returning the :class:`~seqvae.losses.Objective` and leaving fresh gradients on the
    parameters. ``forward_backward(batch, kl_weight)`` copies the batch into the static inputs of
    its shape (capturing the shape first if it is new), replays, points every parameter's
    ``.grad`` at that graph's gradients, and returns the Objective whose figures the replay wrote.
    ``train_step`` then clips, reads and steps as it does after an eager backward."""

    def __init__(self, model, step: Callable[..., Objective], *, width_multiple: int = 8, capture=None) -> None:
        if width_multiple < 1:
            raise ValueError(f"train.cuda_graph_width must be at least 1, not {width_multiple}")
        self.model = model
        self.step = step
        self.width_multiple = width_multiple
        self.parameters = list(model.parameters())
        self.capture = capture
        self.graphs: dict[tuple[int, int], _Captured] = {}

    def shape(self, batch: Batch) -> tuple[int, int]:
        """The graph a batch replays: see :func:`padded_shape`."""
        return padded_shape(batch, self.width_multiple)

    def forward_backward(self, batch: Batch, kl_weight: float) -> Objective:
        key = self.shape(batch)
        captured = self.graphs.get(key)
        if captured is None:
            captured = self.graphs[key] = self._capture(key, batch)
        else:
            pad_into(captured.batch, batch)
        captured.kl_weight.fill_(kl_weight)
        captured.replay()
        for parameter, gradient in zip(self.parameters, captured.gradients):
            parameter.grad = gradient
        return replace(captured.objective, kl_weight=kl_weight)

    def _capture(self, key: tuple[int, int], batch: Batch) -> _Captured:
        rows, width = key
        device = batch.inputs.device
        static = static_batch(rows, width, batch)
        pad_into(static, batch)
        kl_weight = torch.zeros((), dtype=torch.float32, device=device)
        model, parameters = self.model, self.parameters

        def run() -> list:
            goal = self.step(static, kl_weight=kl_weight)
            return [goal.total.detach(), goal.figures, goal.kl_std, *(parameter.grad for parameter in parameters)]

        buffers = [buffer.detach().clone() for buffer in model.buffers()]
        capture = self.capture if self.capture is not None else capturer_for(device)
        try:
            replay, outputs = capture(run)
        except SeqVAEError:
            raise
        except Exception as error:  # a capture that fails names the shape and the first line of why
            reason = str(error).strip().splitlines()[0] if str(error).strip() else ""
            raise SeqVAEError(
                f"train.cuda_graphs: capturing the training step of a {rows} x {width} batch failed "
                f"({type(error).__name__}: {reason}); set train.cuda_graphs=false"
            ) from None
        finally:
            with torch.no_grad():
                for buffer, kept in zip(model.buffers(), buffers):
                    buffer.copy_(kept)
        total, figures, kl_std, *gradients = outputs
        goal = Objective(total=total, figures=figures, kl_weight=0.0, kl_std=kl_std)
        return _Captured(batch=static, kl_weight=kl_weight, replay=replay, objective=goal, gradients=gradients)


def padded_shape(batch: Batch, width_multiple: int) -> tuple[int, int]:
    """(sentences, width padded up to a multiple of ``width_multiple``)."""
    rows, width = batch.inputs.shape
    return rows, -(-width // width_multiple) * width_multiple


def static_batch(rows: int, width: int, like: Batch) -> Batch:
    """An all-padding batch of this shape, with ``like``'s dtypes and device, for a graph's inputs."""
    device = like.inputs.device
    return Batch(
        inputs=torch.full((rows, width), PAD_ID, dtype=like.inputs.dtype, device=device),
        targets=torch.full((rows, width), PAD_ID, dtype=like.targets.dtype, device=device),
        mask=torch.zeros((rows, width), dtype=like.mask.dtype, device=device),
        lengths=torch.ones(rows, dtype=like.lengths.dtype, device=device),
    )


def pad_into(static: Batch, batch: Batch) -> None:
    """Copy ``batch`` into a graph's static batch of the same sentences and at least its width;
    the columns past its width become padding (pad tokens, mask off)."""
    width = batch.inputs.shape[1]
    for name in ("inputs", "targets", "mask"):
        target = getattr(static, name)
        target[:, :width].copy_(getattr(batch, name))
        if width < target.shape[1]:
            target[:, width:].fill_(False if name == "mask" else PAD_ID)
    static.lengths.copy_(batch.lengths)

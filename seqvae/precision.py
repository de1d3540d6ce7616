"""``train.precision = "auto"``: the training arithmetic this machine runs fastest without losing
accuracy, chosen once when a run starts and saved with it (a resumed run keeps it).

- **CUDA**: bf16 autocast where the GPU supports bf16 (compute capability 8.0 and later), fp32
  otherwise (fp16 needs loss scaling and is left to be asked for: ``train.precision = "fp16"``).
- **CPU**: bf16 autocast only where the CPU has native bf16 arithmetic, read from its flags
  (``avx512_bf16`` or ``amx_bf16`` on x86, ``bf16`` on Arm), *and* a short timed probe
  (:func:`probe_speedup`: the run's own model, freshly built, trained on one random batch in
  fp32 and in bf16 autocast, four steps each, about a second at PTB sizes) finds bf16 at least
  :data:`PROBE_GAIN` times as fast. Without such units bf16 is emulated and slower: fp32.

Evaluation (validation included) always runs in fp32, so the IW bound does not depend on the
choice. The decision and its reason are printed when the run starts.
"""

from __future__ import annotations

import time
from pathlib import Path

import torch

PRECISIONS = ("auto", "fp32", "bf16", "fp16")
BF16_FLAGS = ("avx512_bf16", "amx_bf16", "bf16")
"""CPU flags (``/proc/cpuinfo``) of native bf16 arithmetic: x86's AVX-512 BF16 and AMX-BF16,
Arm's BF16 extension."""
PROBE_GAIN = 1.1
"""bf16 is chosen on a CPU only when the probe runs at least this much faster in it."""


def _cpuinfo(cpuinfo: str | None) -> str:
    """/proc/cpuinfo's text (empty where it cannot be read), or the text given."""
    if cpuinfo is not None:
        return cpuinfo
    try:
        return Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="replace")
    except OSError:
        return ""


def _field(cpuinfo: str, keys: tuple[str, ...]) -> str | None:
    """The value of the first line of ``cpuinfo`` whose key is one of ``keys``."""
    for line in cpuinfo.splitlines():
        key, _, value = line.partition(":")
        if key.strip() in keys:
            return value.strip()
    return None


def cpu_flags(cpuinfo: str | None = None) -> set[str]:
    """The CPU's feature flags (x86 ``flags``, Arm ``Features``) from /proc/cpuinfo; empty where
    it cannot be read."""
    return set((_field(_cpuinfo(cpuinfo), ("flags", "Features")) or "").split())


def cpu_model(cpuinfo: str | None = None) -> str:
    """The CPU's model name from /proc/cpuinfo (``unknown`` where there is none)."""
    return _field(_cpuinfo(cpuinfo), ("model name", "Model")) or "unknown"


def bf16_units(flags: set[str]) -> list[str]:
    """The flags of native bf16 arithmetic among ``flags``."""
    return [flag for flag in BF16_FLAGS if flag in flags]


def probe_speedup(config, vocab_size: int, *, length: int, repeats: int = 3) -> float:
    """fp32 time / bf16-autocast time of the run's own training forward and backward pass
    (seqvae.training.step.forward_backward: the model of ``config.model``, freshly built, on a
    batch of ``config.train.batch_size`` random sentences of ``length`` tokens), best of
    ``repeats`` after one warm-up each; above 1: bf16 is faster. Training randomness is left as
    it was."""
    import dataclasses

    from seqvae.data.batching import collate
    from seqvae.data.tokenizers import EOS_ID, PAD_ID, UNK_ID
    from seqvae.models.vae import build_model
    from seqvae.training.step import Precision, forward_backward

    device = torch.device("cpu")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = build_model(config.model, vocab_size=vocab_size, pad_id=PAD_ID, unk_id=UNK_ID).train()
        optimizer = torch.optim.SGD(model.parameters(), lr=0.0)
        objective = dataclasses.replace(config.objective, free_bits="none")  # the network's cost, not a method's
        low = min(EOS_ID + 1, vocab_size - 1)
        rows = torch.randint(low, vocab_size, (config.train.batch_size, max(1, length))).tolist()
        batch = collate(rows)

        def step(precision: Precision) -> float:
            started = time.perf_counter()
            forward_backward(model, optimizer, batch, kl_weight=1.0, objective=objective, precision=precision)
            return time.perf_counter() - started

        timings = []
        for name in ("fp32", "bf16"):
            precision = Precision(name, device)
            step(precision)
            timings.append(min(step(precision) for _ in range(repeats)))
    return timings[0] / timings[1]


def choose_precision(device: torch.device, config, vocab_size: int, *, length: int, flags: set[str] | None = None,
                     probe=None) -> tuple[str, str]:
    """(``fp32`` | ``bf16``, the reason) for ``train.precision = "auto"`` of ``config``'s model
    on ``device`` (``length``: a typical training sentence's tokens, for the probe)."""
    if device.type == "cuda":
        if torch.cuda.is_bf16_supported():
            return "bf16", f"{torch.cuda.get_device_name(device)} supports bf16"
        return "fp32", f"{torch.cuda.get_device_name(device)} has no bf16 (train.precision = fp16 asks for fp16 with loss scaling)"
    if device.type != "cpu":
        return "fp32", f"no automatic choice for device {device.type}"
    units = bf16_units(cpu_flags() if flags is None else flags)
    if not units:
        return "fp32", "the CPU has no native bf16 arithmetic (no avx512_bf16, amx_bf16 or bf16 flag)"
    gain = (probe or probe_speedup)(config, vocab_size, length=length)
    if gain < PROBE_GAIN:
        return "fp32", f"the CPU has {', '.join(units)}, but this model's training step ran only {gain:.2f} times as fast in bf16"
    return "bf16", f"the CPU has {', '.join(units)}, and this model's training step ran {gain:.2f} times as fast in bf16"

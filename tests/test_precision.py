"""train.precision = "auto" (seqvae.precision): the CPU's flags, a timed probe of the model's own
step, the choice said and saved, and kept on resume. The flags and the probe are faked where the
test must not depend on the machine it runs on."""

import dataclasses
import math

import pytest
import torch

from conftest import tiny_config
from seqvae import precision
from seqvae.config import load_config
from seqvae.training import train

AMD_ZEN4 = "processor\t: 0\nmodel name\t: AMD EPYC 9R14\nflags\t\t: fpu sse2 avx2 avx512f avx512_bf16 avx512_vnni\n"
INTEL_SPR = "model name\t: Intel(R) Xeon(R) Platinum 8488C\nflags\t\t: avx2 avx512f avx512_bf16 amx_bf16 amx_tile\n"
AVX2_ONLY = "model name\t: AMD EPYC 7R13\nflags\t\t: fpu sse2 avx2 fma\n"
ARM = "processor\t: 0\nFeatures\t: fp asimd bf16 i8mm\n"
INTEL_SPR_FLAGS = precision.cpu_flags(INTEL_SPR)


def test_the_flags_of_native_bf16_are_read_from_cpuinfo():
    assert precision.bf16_units(precision.cpu_flags(AMD_ZEN4)) == ["avx512_bf16"]
    assert precision.bf16_units(precision.cpu_flags(INTEL_SPR)) == ["avx512_bf16", "amx_bf16"]
    assert precision.bf16_units(precision.cpu_flags(AVX2_ONLY)) == []
    assert precision.bf16_units(precision.cpu_flags(ARM)) == ["bf16"]
    assert precision.cpu_model(INTEL_SPR) == "Intel(R) Xeon(R) Platinum 8488C" and precision.cpu_model(ARM) == "unknown"


def test_auto_takes_bf16_only_with_the_units_and_a_probe_that_finds_it_faster(tiny_corpus, tmp_path):
    config, cpu = tiny_config(tiny_corpus, tmp_path), torch.device("cpu")
    probed = []

    def probe(gain):
        def measured(*args, **kwargs):
            probed.append(gain)
            return gain
        return measured

    choice, reason = precision.choose_precision(cpu, config, 300, length=10, flags=precision.cpu_flags(AVX2_ONLY), probe=probe(9.0))
    assert choice == "fp32" and "no native bf16" in reason and probed == []  # no units: not even probed
    choice, reason = precision.choose_precision(cpu, config, 300, length=10, flags=precision.cpu_flags(INTEL_SPR), probe=probe(1.6))
    assert choice == "bf16" and "avx512_bf16, amx_bf16" in reason and "1.60 times as fast" in reason
    choice, reason = precision.choose_precision(cpu, config, 300, length=10, flags=precision.cpu_flags(AMD_ZEN4), probe=probe(1.02))
    assert choice == "fp32" and "only 1.02 times as fast" in reason


def test_the_probe_times_the_models_own_step_and_leaves_training_randomness_alone(tiny_corpus, tmp_path):
    config = tiny_config(tiny_corpus, tmp_path)
    state = torch.get_rng_state()
    gain = precision.probe_speedup(config, 300, length=9, repeats=1)
    assert math.isfinite(gain) and gain > 0
    assert torch.equal(torch.get_rng_state(), state)


def test_auto_is_said_saved_and_kept_on_resume(tiny_corpus, tmp_path, monkeypatch):
    monkeypatch.setattr(precision, "cpu_flags", lambda: INTEL_SPR_FLAGS)
    monkeypatch.setattr(precision, "probe_speedup", lambda *args, **kwargs: 1.5)
    run_dir = tmp_path / "run"
    config = tiny_config(tiny_corpus, run_dir, train={"precision": "auto", "epochs": 1, "max_steps": 4})
    said = []
    train(config, progress=False, echo=said.append)
    assert any(line.startswith("train.precision auto: bf16 (the CPU has avx512_bf16, amx_bf16") for line in said)
    assert load_config(run_dir / "config.toml").train.precision == "bf16"
    # resumed with auto (the recipe's config again) on a machine whose probe now says otherwise:
    # the run keeps what it started with, without probing
    monkeypatch.setattr(precision, "probe_speedup", lambda *args, **kwargs: pytest.fail("probed on resume"))
    said.clear()
    resumed = dataclasses.replace(config, train=dataclasses.replace(config.train, max_steps=8))
    train(resumed, resume=True, progress=False, echo=said.append)
    assert not any("train.precision auto" in line for line in said)
    assert load_config(run_dir / "config.toml").train.precision == "bf16"


def test_auto_without_the_units_trains_in_fp32_as_before(tiny_corpus, tmp_path, monkeypatch):
    monkeypatch.setattr(precision, "cpu_flags", lambda: {"avx2", "fma"})
    runs = {}
    for name in ("auto", "fp32"):
        config = tiny_config(tiny_corpus, tmp_path / name, train={"precision": name, "epochs": 1, "max_steps": 3})
        said = []
        train(config, progress=False, echo=said.append)
        runs[name] = torch.load(tmp_path / name / "checkpoints" / "last.pt", weights_only=True)["model"]
        if name == "auto":
            assert any(line.startswith("train.precision auto: fp32 (the CPU has no native bf16") for line in said)
            assert load_config(tmp_path / name / "config.toml").train.precision == "fp32"
    assert all(torch.equal(runs["auto"][key], runs["fp32"][key]) for key in runs["fp32"])


def test_auto_on_cuda_takes_bf16_where_the_gpu_supports_it(tiny_corpus, tmp_path, monkeypatch):
    config, gpu = tiny_config(tiny_corpus, tmp_path), torch.device("cuda", 0)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda device=None: "NVIDIA H200")
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *args, **kwargs: True)
    probe = lambda *args, **kwargs: pytest.fail("a GPU is not probed")  # noqa: E731
    assert precision.choose_precision(gpu, config, 300, length=10, probe=probe) == ("bf16", "NVIDIA H200 supports bf16")
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *args, **kwargs: False)
    choice, reason = precision.choose_precision(gpu, config, 300, length=10, probe=probe)
    assert choice == "fp32" and "has no bf16" in reason and "fp16" in reason

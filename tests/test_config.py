import pytest

from seqvae.config import Config, config_to_toml, load_config
from seqvae.errors import SeqVAEError


def test_defaults_and_dotted_overrides(tmp_path):
    path = tmp_path / "c.toml"
    path.write_text('[model]\nlatent_dim = 8\n[objective]\nword_dropout = 0.5\n', encoding="utf-8")
    config = load_config(path, ["model.latent_dim=32", "model.injection=concat", "train.learning_rate=3e-4"])
    assert config.model.latent_dim == 32
    assert config.model.injection == ("concat",)
    assert config.objective.word_dropout == 0.5
    assert config.train.learning_rate == 3e-4
    assert config.model.hidden_dim == Config().model.hidden_dim


def test_saved_toml_reads_back_identically(tmp_path):
    config = load_config(None, ["model.bidirectional=true", "data.train=x.txt", "annealing.beta=0.5"])
    path = tmp_path / "saved.toml"
    path.write_text(config_to_toml(config), encoding="utf-8")
    assert load_config(path) == config
    assert config.data.train.endswith("x.txt") and config.data.train.startswith("/")


def test_unknown_key_names_the_valid_keys(tmp_path):
    path = tmp_path / "c.toml"
    path.write_text("[model]\nlatent_size = 8\n", encoding="utf-8")
    with pytest.raises(SeqVAEError, match="unknown key 'model.latent_size'.*latent_dim"):
        load_config(path)
    with pytest.raises(SeqVAEError, match="unknown key 'train.epoch'.*epochs"):
        load_config(None, ["train.epoch=3"])
    with pytest.raises(SeqVAEError, match="unknown section 'modle'.*model"):
        load_config(None, ["modle.latent_dim=3"])


def test_wrong_type_and_bad_choice_are_errors(tmp_path):
    path = tmp_path / "c.toml"
    path.write_text('[model]\nlatent_dim = "big"\n', encoding="utf-8")
    with pytest.raises(SeqVAEError, match="model.latent_dim.*expected int"):
        load_config(path)
    with pytest.raises(SeqVAEError, match="expected an integer"):
        load_config(None, ["model.latent_dim=3.5"])
    with pytest.raises(SeqVAEError, match="'cosine' is not one of constant, linear, logistic, cyclical"):
        load_config(None, ["annealing.schedule=cosine"])
    with pytest.raises(SeqVAEError, match="'sideways' is not one of initial_state, concat, add, memory, prefix"):
        load_config(None, ["model.injection=concat,sideways"])
    with pytest.raises(SeqVAEError, match="prefix does not apply to the lstm decoder; choose from initial_state, concat, add"):
        load_config(None, ["model.injection=concat,prefix"])
    with pytest.raises(SeqVAEError, match="initial_state, concat does not apply to the transformer decoder; choose from add, memory, prefix"):
        load_config(None, ["model.decoder=transformer"])
    with pytest.raises(SeqVAEError, match="not divisible by 3 heads"):
        load_config(None, ["model.encoder=transformer", "model.num_heads=3", "model.hidden_dim=256"])
    with pytest.raises(SeqVAEError, match="objective.word_dropout"):
        load_config(None, ["objective.word_dropout=1.5"])


def test_invalid_toml_names_the_file(tmp_path):
    path = tmp_path / "broken.toml"
    path.write_text("[model\n", encoding="utf-8")
    with pytest.raises(SeqVAEError, match="broken.toml: invalid TOML"):
        load_config(path)


def test_automatic_threads_leave_the_busy_cpus_alone(monkeypatch):
    import os

    import seqvae.threads as threads

    monkeypatch.setattr(threads, "DEFAULT", 2)
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1}, raising=False)
    for busy, expected in ((0.1, 2), (0.9, 1), (1.4, 1), (3.0, 1)):
        monkeypatch.setattr(threads, "busy_cpus", lambda busy=busy: busy)
        assert threads.automatic_threads() == expected
    assert 0.0 <= threads.busy_cpus(0.05) <= (os.cpu_count() or 1) + 1e-9
    before = threads.torch.get_num_threads()
    try:
        assert threads.use_threads(1) == 1 and threads.torch.get_num_threads() == 1
    finally:
        threads.torch.set_num_threads(before)


def test_a_run_records_its_threads_and_a_resume_keeps_them(tiny_corpus, tmp_path, monkeypatch):
    import seqvae.threads as threads
    from seqvae.config import load_config
    from seqvae.training import train

    from conftest import tiny_config

    before = threads.torch.get_num_threads()
    try:
        monkeypatch.setattr(threads, "automatic_threads", lambda: 1)
        config = tiny_config(tiny_corpus, tmp_path / "run", run={"threads": 0}, train={"epochs": 2, "max_steps": 5})
        train(config, progress=False)
        assert load_config(tmp_path / "run" / "config.toml").run.threads == 1
        monkeypatch.setattr(threads, "automatic_threads", lambda: 2)  # the machine is idle now
        resumed = tiny_config(tiny_corpus, tmp_path / "run", run={"threads": 0}, train={"epochs": 2})
        train(resumed, resume=True, progress=False)
        assert load_config(tmp_path / "run" / "config.toml").run.threads == 1 and threads.torch.get_num_threads() == 1
    finally:
        threads.torch.set_num_threads(before)


def test_the_configuration_reference_is_generated_from_the_code():
    from seqvae.config_reference import REFERENCE, render

    assert REFERENCE.read_text(encoding="utf-8") == render(), "docs/config.md is stale: run python -m seqvae.config_reference --write"
    for key in ("latent_dim", "posterior", "flow", "free_bits", "init_from", "aggressive", "threads"):
        assert f"| `{key}` |" in render()


def test_a_config_of_only_data_has_the_remedies_against_collapse(tiny_corpus):
    # without them such a config collapsed on the embedded corpus and on PTB sentences (README)
    from seqvae.config import load_config

    config = load_config(None, [f"data.{split}={path}" for split, path in tiny_corpus.items()])
    assert config.annealing.schedule == "linear" and config.annealing.start == 0.0 and config.annealing.warmup_steps == 2000
    assert config.objective.free_bits == "per_dimension" and config.objective.free_bits_lambda == 0.1

"""Live curves (run.tensorboard, seqvae.training.watching), read back with TensorBoard's own
event reader: what a user sees in ``tensorboard --logdir``."""

import dataclasses
import shutil
from pathlib import Path

from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from conftest import metrics, tiny_config
from seqvae.training import train


def _events(log_dir: Path) -> EventAccumulator:
    events = EventAccumulator(str(log_dir), size_guidance={"scalars": 0, "histograms": 0, "tensors": 0})
    events.Reload()
    return events


def _with_epochs(config, epochs: int):
    return dataclasses.replace(config, train=dataclasses.replace(config.train, epochs=epochs))


def test_curves_match_the_metrics_log_and_a_resume_after_a_lost_sitting_logs_each_step_once(tiny_corpus, tmp_path):
    run_dir = tmp_path / "run"
    config = tiny_config(tiny_corpus, run_dir, run={"tensorboard": True}, train={"epochs": 1, "log_every": 4})
    train(config, progress=False)
    kept = tmp_path / "epoch-1.pt"
    shutil.copyfile(run_dir / "checkpoints" / "last.pt", kept)
    train(_with_epochs(config, 2), resume=True, progress=False)
    logged_by_lost_sitting = {record["step"] for record in metrics(run_dir)}
    # The second sitting's checkpoint is lost (a kill before it was written): the run resumes from
    # epoch 1 and logs epoch 2's steps again, which must show once, as the new sitting wrote them.
    shutil.copyfile(kept, run_dir / "checkpoints" / "last.pt")
    train(_with_epochs(config, 2), resume=True, progress=False)

    records = metrics(run_dir)
    assert {record["step"] for record in records} == logged_by_lost_sitting
    assert len(list((run_dir / "tensorboard").iterdir())) == 3  # an event file per sitting
    events = _events(run_dir / "tensorboard")
    for split, key in (("train", "loss"), ("train", "kl"), ("train", "beta"), ("train", "lr"), ("valid", "elbo"),
                       ("valid", "active_units"), ("valid", "mi")):
        expected = [(record["step"], record[key]) for record in records if record["split"] == split]
        shown = [(event.step, event.value) for event in events.Scalars(f"{split}/{key}")]
        assert [step for step, _ in shown] == [step for step, _ in expected], (split, key)
        for (_, value), (_, wanted) in zip(shown, expected):
            assert abs(value - wanted) <= 1e-5 * max(1.0, abs(wanted)), (split, key, value, wanted)
    train_steps = [record["step"] for record in records if record["split"] == "train"]
    for key in ("grad_norm", "tokens_per_s"):  # only in TensorBoard: they are not reproducible
        shown = events.Scalars(f"train/{key}")
        assert [event.step for event in shown] == train_steps
        assert all(event.value > 0 for event in shown)
    valid_steps = [record["step"] for record in records if record["split"] == "valid"]
    histograms = events.Histograms("valid/kl_per_dimension")
    assert [event.step for event in histograms] == valid_steps
    assert histograms[-1].histogram_value.num == config.model.latent_dim
    last_kl = next(record["kl"] for record in reversed(records) if record["split"] == "valid")
    assert abs(histograms[-1].histogram_value.sum - last_kl) < 0.25 * last_kl + 0.05  # the dimensions' KL adds up
    for tag in ("valid/prior_samples/text_summary", "valid/reconstructions/text_summary"):
        texts = events.Tensors(tag)
        assert [event.step for event in texts] == valid_steps
        shown = texts[-1].tensor_proto.string_val[0].decode()
        assert shown.count("`") == 6 and len(shown) > 20
    assert "  ->  " in events.Tensors("valid/reconstructions/text_summary")[-1].tensor_proto.string_val[0].decode()



def test_without_the_extra_the_key_is_a_one_line_error_before_anything_is_written(tiny_corpus, tmp_path, monkeypatch, capsys):
    import sys

    from seqvae.cli import main
    from seqvae.config import config_to_toml

    monkeypatch.setitem(sys.modules, "tensorboard", None)  # as if not installed: importing it fails
    config = tmp_path / "config.toml"
    config.write_text(config_to_toml(tiny_config(tiny_corpus, tmp_path / "run", run={"tensorboard": True})))
    assert main(["train", str(config), "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "pip install 'seqvae[tensorboard]'" in err and "Traceback" not in err
    assert not (tmp_path / "run").exists()

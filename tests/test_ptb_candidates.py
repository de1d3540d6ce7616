"""recipes/ptb/candidates.py: the fourth setting's rule, written in RESULTS.md before any candidate
trained, applied to constructed run directories."""

import importlib.util
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def candidates():
    spec = importlib.util.spec_from_file_location("ptb_candidates", REPO / "recipes" / "ptb" / "candidates.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up by name
    spec.loader.exec_module(module)
    yield module
    del sys.modules[spec.name]


def _run(root: Path, name: str, elbo: dict[int, float], valid: dict | None = None, *, extra: list[dict] = ()) -> Path:
    run_dir = root / f"ptb-cand-{name}"
    (run_dir / "eval").mkdir(parents=True)
    records = [{"split": "train", "epoch": 1, "step": 10, "loss": 300.0}]
    records += [{"split": "valid", "epoch": epoch, "elbo": value, "kl": 9.0} for epoch, value in sorted(elbo.items())]
    records += list(extra)
    (run_dir / "metrics.jsonl").write_text("".join(json.dumps(record) + "\n" for record in records))
    if valid is not None:
        figures = {"iw_samples": 500, "kl": 9.0, "mi": 6.5, "active_units": 32, "ppl_iw": 100.0, **valid}
        (run_dir / "eval" / "valid-best.json").write_text(json.dumps({"split": "valid", "metrics": figures}))
    return run_dir


def test_a_candidate_more_than_a_nat_behind_at_epoch_40_is_stopped_and_the_choice_waits_for_the_rest(candidates, tmp_path):
    ahead = _run(tmp_path, "ahead", {39: 110.5, 40: 110.0, 41: 109.8})
    near = _run(tmp_path, "near", {40: 110.9})  # 0.9 nats behind: goes on
    behind = _run(tmp_path, "behind", {40: 111.2, 41: 111.0})  # 1.2 nats behind: stops
    early = _run(tmp_path, "early", {12: 130.0})  # not at epoch 40 yet: not judged
    read = [candidates.read_candidate(path) for path in (ahead, near, behind, early)]
    assert candidates.stopped(read) == {"behind"}
    chosen, why = candidates.choice(read, {"behind"})
    assert chosen is None and why.startswith("not yet: waiting for ahead, near, early")


def test_the_choice_is_the_lowest_validation_bound_among_those_that_meet_the_goal(candidates, tmp_path):
    runs = [
        _run(tmp_path, "floor-0.2", {40: 110.0}, {"nll_iw": 99.0, "kl": 7.6}),  # the lowest bound, KL below 8
        _run(tmp_path, "iaf-fb", {40: 110.2}, {"nll_iw": 99.5}),
        _run(tmp_path, "bn-vae", {40: 110.1}, {"nll_iw": 99.8}),
        _run(tmp_path, "longer-ae", {40: 112.0, 60: 109.0}),  # stopped at 40, though it trained on
    ]
    read = [candidates.read_candidate(path) for path in runs]
    stops = candidates.stopped(read)
    assert stops == {"longer-ae"}
    chosen, why = candidates.choice(read, stops)
    assert chosen.name == "iaf-fb" and "99.50" in why
    text = candidates.table(read, stops)
    assert "| `floor-0.2` | 40 | 110.00 | 110.00 (40) | evaluated, below the goal's KL, MI or AU | 99.00 |" in text
    assert "| `longer-ae` | 60 | 112.00 | 109.00 (60) | stopped at epoch 40 |" in text


def test_validations_a_step_budget_cut_short_do_not_count(candidates, tmp_path):
    run = _run(tmp_path, "cut", {40: 110.0}, extra=[{"split": "valid", "epoch": 41, "elbo": 90.0, "stopped_by": "max_steps"}])
    assert candidates.read_candidate(run).elbo == {40: 110.0}


def test_the_tool_refuses_another_k_and_names_what_is_missing(candidates, tmp_path, capsys):
    other_k = _run(tmp_path, "k50", {40: 110.0}, {"nll_iw": 99.0, "iw_samples": 50})
    with pytest.raises(SystemExit, match=r"valid-best.json: K = 50, the rule compares K = 500"):
        candidates.main([str(other_k)])
    with pytest.raises(SystemExit, match=r"nowhere: run directory not found"):
        candidates.main([str(tmp_path / "nowhere")])
    ok = _run(tmp_path, "ok", {40: 110.0}, {"nll_iw": 99.0})
    assert candidates.main([str(ok)]) == 0
    assert "the choice: ok: the lowest validation IW-NLL (99.00)" in capsys.readouterr().out


def test_by_default_it_reads_the_protocols_candidates_and_not_the_logs_beside_them(candidates, tmp_path, monkeypatch, capsys):
    runs = tmp_path / "runs"
    _run(runs, "floor-0.2", {40: 110.0})
    _run(runs, "iaf-fb", {40: 110.5})
    _run(runs, "longer-ae", {40: 200.0})  # the longer candidate's autoencoder stage: no candidate
    for name in ("floor-0.2", "iaf-fb"):  # queue.sh writes runs/ptb-JOB.log for job cand-NAME
        (runs / f"ptb-cand-{name}.log").write_text("epoch 1/100: ...\n")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(candidates, "RECORD", tmp_path / "no-record.json")  # no candidate recorded
    assert candidates.main([]) == 0
    out = capsys.readouterr().out
    assert "`floor-0.2` | 40 | 110.00" in out and "`iaf-fb` | 40 | 110.50" in out
    assert "longer-ae" not in out and ".log" not in out
    # The protocol's other two have not started: they are listed, and the choice waits for them
    # even once both that have run are evaluated.
    assert "| `longer` | 0 | - | - | not started |" in out and "| `bn-vae` | 0 | - | - | not started |" in out
    for name in ("floor-0.2", "iaf-fb"):
        figures = {"iw_samples": 500, "nll_iw": 99.0, "kl": 9.0, "mi": 6.5, "active_units": 32, "ppl_iw": 100.0}
        (runs / f"ptb-cand-{name}" / "eval" / "valid-best.json").write_text(json.dumps({"metrics": figures}))
    assert candidates.main([]) == 0
    assert "the choice: not yet: waiting for longer, bn-vae" in capsys.readouterr().out


def test_settled_candidates_are_recorded_and_read_back_once_their_run_directories_are_lost(candidates, tmp_path, monkeypatch, capsys):
    """--record keeps each settled candidate (stopped, or evaluated at K = 500) and not one still
    training; with its run directory gone, the default reading takes it from the record, marked,
    and the rule's verdicts and the choice are what they were."""
    runs = tmp_path / "runs"
    _run(runs, "floor-0.2", {40: 110.0, 41: 109.5}, {"nll_iw": 99.0, "kl": 7.6})
    _run(runs, "iaf-fb", {40: 110.2, 41: 109.9}, {"nll_iw": 99.5})
    _run(runs, "bn-vae", {40: 111.5})  # stopped by the rule
    _run(runs, "longer", {12: 130.0})  # still training: not recorded
    record = tmp_path / "candidates.json"
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(candidates, "RECORD", record)
    assert candidates.main(["--record"]) == 0
    before = capsys.readouterr().out
    assert f"{record}: floor-0.2, iaf-fb, bn-vae recorded" in before
    assert set(json.loads(record.read_text())) == {"floor-0.2", "iaf-fb", "bn-vae"}
    for name in ("floor-0.2", "iaf-fb", "bn-vae"):
        shutil.rmtree(runs / f"ptb-cand-{name}")
    assert candidates.main(["--record"]) == 0  # the record is kept, not emptied
    after = capsys.readouterr().out
    assert f"{record}: nothing new recorded" in after
    assert "| `iaf-fb` | 41 | 110.20 | 109.90 (41) | evaluated (recorded) | 99.50 |" in after
    assert "| `bn-vae` | 40 | 111.50 | 111.50 (40) | stopped at epoch 40 (recorded) |" in after
    assert "| `longer` | 12 |" in after and "waiting for longer" in after
    shutil.rmtree(runs / "ptb-cand-longer")
    _run(runs, "longer", {40: 110.4}, {"nll_iw": 99.2})
    assert candidates.main([]) == 0
    assert "the choice: longer: the lowest validation IW-NLL (99.20)" in capsys.readouterr().out
    record.write_text('{"iaf-fb": {"epochs": 100}}')
    with pytest.raises(SystemExit, match=r"candidates.json: not a record of candidates \(KeyError"):
        candidates.main([])
    with pytest.raises(SystemExit, match=r"candidates.json: not a record"):  # named, and left as it was
        candidates.main(["--record", str(runs / "ptb-cand-longer")])
    assert record.read_text() == '{"iaf-fb": {"epochs": 100}}'


def test_the_committed_record_is_the_table_in_results_md(candidates):
    """recipes/ptb/candidates.json holds what RESULTS.md's "Where the candidates stand" table gives
    for each candidate, and the rule applied to it stops `bn-vae` and `longer` and chooses none."""
    records = candidates.read_records(candidates.RECORD)
    assert set(records) == set(candidates.PROTOCOL)
    text = (REPO / "recipes" / "ptb" / "RESULTS.md").read_text()
    start = text.index("**Where the candidates stand")
    section = text[start:text.index("\n## ", start)]
    for name, candidate in records.items():
        (row,) = [line for line in section.splitlines() if line.startswith(f"| `{name}` |")]
        cells = [cell.strip() for cell in row.strip("|").split("|")]
        value, epoch = candidate.best
        assert cells[1] == f"{candidate.elbo[40]:.2f}" and cells[2] == f"{value:.2f} ({epoch})", name
        valid = candidate.valid or {}
        for cell, key in zip(cells[4:9], ("nll_iw", "ppl_iw", "kl", "mi", "active_units")):
            expected = "stopped" if key == "nll_iw" and not valid else "-" if not valid else (
                str(valid[key]) if key == "active_units" else f"{valid[key]:.2f}")
            assert cell == expected, (name, key)
    stops = candidates.stopped(list(records.values()))
    assert stops == {"bn-vae", "longer"}
    chosen, why = candidates.choice(list(records.values()), stops)
    assert chosen is None and why.startswith("none: no evaluated candidate meets")
    assert "**Where the candidates stand (2026-12-06): all four settled, none chosen.**" in section


def _queue(tmp_path: Path, jobs: list[str], stand_in: str, **env: str) -> dict[str, list[str]]:
    """recipes/ptb/queue.sh run in a copy of the repository under tmp_path with ``stand_in`` (a bash
    script) for python; each job's log, line by line."""
    root = tmp_path / "repo"
    (root / "recipes" / "ptb").mkdir(parents=True, exist_ok=True)
    shutil.copy(REPO / "recipes" / "ptb" / "queue.sh", root / "recipes" / "ptb" / "queue.sh")
    python = tmp_path / "bin" / "python"
    python.parent.mkdir()
    python.write_text("#!/bin/bash\n" + stand_in)
    python.chmod(0o755)
    env = {**os.environ, "PATH": f"{python.parent}{os.pathsep}{os.environ['PATH']}", **env}
    subprocess.run(["bash", str(root / "recipes" / "ptb" / "queue.sh"), *jobs], cwd=tmp_path, env=env, check=True, timeout=60)
    return {job: (root / "runs" / f"ptb-{job}.log").read_text().splitlines() for job in jobs}


def test_the_queue_never_evaluates_a_candidate_on_test_and_starts_candidates_from_a_finished_autoencoder(tmp_path):
    """recipes/ptb/queue.sh, run with a stand-in python that records its arguments: each
    candidate's command is the protocol's base command (--from the shared autoencoder, --eval
    valid, the SGD setting) with its own additions, and no candidate is evaluated on test; a row's
    command evaluates both splits and writes its results file."""
    root = tmp_path / "repo"
    (root / "runs" / "ptb-ae-fb-softmax-ae").mkdir(parents=True)  # what the autoencoder's run would make
    jobs = ["ae", "cand-floor-0.2", "cand-iaf-fb", "cand-bn-vae", "cand-longer", "iaf"]
    logs = _queue(tmp_path, jobs, 'echo "$@"\n')
    assert (root / "runs" / "ptb-ae-fb-softmax-ae" / ".finished").is_file()  # what the candidates waited for
    base = ["--method", "ae-fb", "--resume", "--eval", "valid", "model.output_layer=softmax", "model.init=uniform",
            "train.optimizer=sgd", "train.learning_rate=0.5", "train.lr_patience=5", "run.threads=1", "train.precision=fp32"]
    own = {
        "cand-floor-0.2": ["objective.free_bits_lambda=0.2"],
        "cand-iaf-fb": ["model.flow=iaf", "objective.free_bits=total_hinge", "objective.free_bits_lambda=8"],
        "cand-bn-vae": ["model.posterior=batchnorm", "model.posterior_gamma=0.7", "objective.free_bits=none"],
    }
    for job, additions in own.items():
        (line,) = logs[job]
        words = line.split()
        assert words[words.index("--from") + 1] == "runs/ptb-ae-fb-softmax-ae"
        assert f"run.dir=runs/ptb-{job}" in words
        assert all(word in words for word in base + additions), job
    longer_ae, longer = logs["cand-longer"]
    assert "--earlier-stages" in longer_ae.split() and "train.epochs=200" in longer_ae.split()
    assert (root / "runs" / "ptb-cand-longer-ae").is_dir()  # the shared autoencoder, copied
    assert "--from runs/ptb-cand-longer-ae" in longer and "run.dir=runs/ptb-cand-longer" in longer.split()
    for job in own.keys() | {"cand-longer"}:
        assert not any("test" in word or word == "both" for line in logs[job] for word in line.split()), job
    (row,) = logs["iaf"]
    assert "--method iaf" in row and "--eval both" in row and "--results recipes/ptb/results/iaf.json" in row


def test_the_longer_candidate_trains_its_own_autoencoder_when_there_is_no_shared_one(tmp_path):
    """With no shared autoencoder (its machine lost), `cand-longer` does not wait for one: it
    trains its autoencoder from the seed to 200 epochs, then its second stage from that; and
    THREADS=2 gives the lane's commands two threads."""
    root = tmp_path / "repo"
    # the autoencoder stage's run makes its directory
    stand_in = '[[ "$*" == *--earlier-stages* ]] && mkdir -p runs/ptb-cand-longer-ae\necho "$@ OMP=$OMP_NUM_THREADS"\n'
    longer_ae, longer = _queue(tmp_path, ["cand-longer"], stand_in, THREADS="2")["cand-longer"]
    assert not (root / "runs" / "ptb-ae-fb-softmax-ae").exists()  # nothing was waited for or copied
    assert "--earlier-stages" in longer_ae.split() and "train.epochs=200" in longer_ae.split()
    assert "run.dir=runs/ptb-cand-longer" in longer_ae.split()
    assert "--from runs/ptb-cand-longer-ae" in longer and "--eval valid" in longer
    for line in (longer_ae, longer):
        assert "run.threads=2" in line.split() and line.endswith("OMP=2")

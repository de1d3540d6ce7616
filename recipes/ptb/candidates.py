"""The fourth setting of seqvae's own PTB row, chosen on validation alone by the rule RESULTS.md
wrote down before any candidate trained ("The fourth setting: how it will be chosen").

    python recipes/ptb/candidates.py                  # the protocol's candidates, from runs/ptb-cand-*
    python recipes/ptb/candidates.py RUN_DIR ...      # the named run directories
    python recipes/ptb/candidates.py --markdown       # the table as RESULTS.md gives it
    python recipes/ptb/candidates.py --record         # keep the settled candidates' figures in RECORD

For each candidate: the epochs it has trained, its validation -ELBO at CHECK_EPOCH (the
per-epoch validation of metrics.jsonl), its best validation -ELBO, and, once the recipe's
``--eval valid`` has run, its validation figures at K = 500 (eval/valid-best.json). Then the
rule's verdicts:

- **stop**: a candidate whose -ELBO at CHECK_EPOCH is more than MARGIN nats per sentence above
  the best candidate's at that epoch stops there. A candidate that has not reached the epoch yet
  is not judged; one judged early stays judged, since the best can only fall as others arrive.
- **the choice**: once every candidate is stopped or evaluated, the evaluated candidate with the
  lowest validation IW-NLL among those that meet the goal's KL, MI and AU on validation. Only
  that one is evaluated on test.

Run directories have been lost with their machines, so a settled candidate's figures (stopped,
or evaluated at K = 500) are kept in RECORD, committed beside this file: by default a candidate
with no run directory is read from there, and the table marks it "recorded".

Nothing here reads a test figure.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import dataclass, field
from pathlib import Path

CHECK_EPOCH = 40
MARGIN = 1.0
"""Nats per sentence of validation -ELBO at CHECK_EPOCH above the best candidate's that stop a candidate."""
GOAL = {"kl": 8.0, "mi": 6.0, "active_units": 32}
"""The goal's floors (RESULTS.md, "seqvae's best row"), applied here to validation figures."""
VALID_FILE = Path("eval") / "valid-best.json"
PROTOCOL = ("floor-0.2", "longer", "iaf-fb", "bn-vae")
"""The candidates RESULTS.md names (by run directory, runs/ptb-cand-NAME): by default the choice
waits for each of them, started or not."""
K = 500
RECORD = Path(__file__).with_name("candidates.json")
"""The settled candidates' figures: per candidate its epochs, its per-epoch validation -ELBO (all
epochs when written by --record; epoch 40 and the best where copied from RESULTS.md's table) and
its K = 500 validation figures."""


@dataclass
class Candidate:
    name: str
    elbo: dict[int, float] = field(default_factory=dict)
    """Validation -ELBO of each finished epoch."""
    valid: dict | None = None
    """The final validation figures at K = 500 (eval/valid-best.json), once evaluated."""
    trained: int | None = None
    """The epochs trained, where the -ELBO of each is not all known (a record); else the last one's."""
    recorded: bool = False
    """Read from RECORD, its run directory gone."""

    @property
    def epochs(self) -> int:
        return self.trained if self.trained is not None else max(self.elbo, default=0)

    def settled(self, stops: set[str]) -> bool:
        return self.name in stops or self.valid is not None

    @property
    def best(self) -> tuple[float, int] | None:
        """The lowest validation -ELBO and its epoch."""
        return min((value, epoch) for epoch, value in self.elbo.items()) if self.elbo else None

    def meets_goal(self) -> bool:
        return self.valid is not None and all(self.valid.get(key, -1) >= floor for key, floor in GOAL.items())


def read_candidate(run_dir: Path) -> Candidate:
    """A candidate from its run directory: its metrics.jsonl validations (the last record of each
    epoch, less those where a step budget stopped the run mid-epoch) and its validation at K = 500."""
    metrics = run_dir / "metrics.jsonl"
    if not metrics.is_file():
        raise SystemExit(f"candidates.py: {metrics}: not found (not a run directory, or it has not started)")
    candidate = Candidate(run_dir.name.removeprefix("ptb-cand-"))
    for number, line in enumerate(metrics.read_text(encoding="utf-8").splitlines(), 1):
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            raise SystemExit(f"candidates.py: {metrics}: line {number} is not JSON") from None
        if record.get("split") == "valid" and "stopped_by" not in record and "elbo" in record:
            candidate.elbo[int(record["epoch"])] = float(record["elbo"])
    path = run_dir / VALID_FILE
    if path.is_file():
        candidate.valid = _valid_figures(json.loads(path.read_text(encoding="utf-8"))["metrics"], path)
    return candidate


def _valid_figures(figures: dict, where: Path) -> dict:
    if figures.get("iw_samples") != K:
        raise SystemExit(f"candidates.py: {where}: K = {figures.get('iw_samples')}, the rule compares K = {K}")
    return figures


def read_records(path: Path) -> dict[str, Candidate]:
    """The settled candidates kept in ``path`` (none when it does not exist)."""
    if not path.is_file():
        return {}
    try:
        records = json.loads(path.read_text(encoding="utf-8"))
        return {
            name: Candidate(name, {int(epoch): float(value) for epoch, value in record["elbo"].items()},
                            None if record["valid"] is None else _valid_figures(record["valid"], path),
                            trained=int(record["epochs"]), recorded=True)
            for name, record in records.items()
        }
    except (json.JSONDecodeError, KeyError, TypeError, ValueError, AttributeError) as error:
        raise SystemExit(f"candidates.py: {path}: not a record of candidates ({type(error).__name__}: {error})") from None


def write_records(candidates: list[Candidate], stops: set[str], path: Path) -> list[str]:
    """Add to ``path`` every settled candidate read from its run directory (a recorded one is
    kept as it is); the names written."""
    read_records(path)  # a record that cannot be read is named, not overwritten
    records = json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}
    written = []
    for candidate in candidates:
        if candidate.recorded or not candidate.settled(stops):
            continue
        records[candidate.name] = {"epochs": candidate.epochs,
                                   "elbo": {str(epoch): value for epoch, value in sorted(candidate.elbo.items())},
                                   "valid": candidate.valid}
        written.append(candidate.name)
    if written:
        path.write_text(json.dumps(records, indent=1) + "\n", encoding="utf-8")
    return written


def stopped(candidates: list[Candidate], *, epoch: int = CHECK_EPOCH, margin: float = MARGIN) -> set[str]:
    """The candidates the rule stops at ``epoch``: -ELBO there more than ``margin`` above the best."""
    there = {candidate.name: candidate.elbo[epoch] for candidate in candidates if epoch in candidate.elbo}
    if not there:
        return set()
    best = min(there.values())
    return {name for name, value in there.items() if value > best + margin}


def choice(candidates: list[Candidate], stops: set[str]) -> tuple[Candidate | None, str]:
    """The chosen candidate and why; None while a candidate is neither stopped nor evaluated."""
    waiting = [candidate.name for candidate in candidates if candidate.name not in stops and candidate.valid is None]
    if waiting:
        return None, f"not yet: waiting for {', '.join(waiting)} (neither stopped nor evaluated at K = {K})"
    eligible = [candidate for candidate in candidates if candidate.name not in stops and candidate.meets_goal()]
    if not eligible:
        return None, "none: no evaluated candidate meets the goal's KL, MI and AU on validation"
    chosen = min(eligible, key=lambda candidate: candidate.valid["nll_iw"])
    return chosen, f"{chosen.name}: the lowest validation IW-NLL ({chosen.valid['nll_iw']:.2f}) of those that meet the goal"


def _cell(value, digits: int = 2) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def table(candidates: list[Candidate], stops: set[str]) -> str:
    """The candidates as a Markdown table."""
    lines = [
        f"| candidate | epochs | -ELBO at epoch {CHECK_EPOCH} | best -ELBO (epoch) | verdict | IW-NLL (K = {K}) | IW-PPL | KL | MI | AU |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for candidate in candidates:
        best = candidate.best
        valid = candidate.valid or {}
        if candidate.name in stops:
            verdict = f"stopped at epoch {CHECK_EPOCH}"
        elif candidate.valid is not None:
            verdict = "evaluated" + ("" if candidate.meets_goal() else ", below the goal's KL, MI or AU")
        elif not candidate.elbo:
            verdict = "not started"
        else:
            verdict = "training"
        if candidate.recorded:
            verdict += " (recorded)"
        lines.append(
            f"| `{candidate.name}` | {candidate.epochs} | {_cell(candidate.elbo.get(CHECK_EPOCH))} | "
            f"{'-' if best is None else f'{best[0]:.2f} ({best[1]})'} | {verdict} | {_cell(valid.get('nll_iw'))} | "
            f"{_cell(valid.get('ppl_iw'))} | {_cell(valid.get('kl'))} | {_cell(valid.get('mi'))} | "
            f"{valid.get('active_units', '-')} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run_dirs", nargs="*", type=Path, help=f"candidate run directories (default: the four candidates of RESULTS.md, from runs/ptb-cand-*, or from {RECORD.name} where a run directory is gone)")
    parser.add_argument("--markdown", action="store_true", help="print only the table")
    parser.add_argument("--record", action="store_true",
                        help=f"keep the settled candidates' figures (stopped, or evaluated at K = {K}) in {RECORD.name}, for when their run directories are lost")
    args = parser.parse_args(argv)
    if args.run_dirs:  # the named run directories, and only those
        # An autoencoder stage (runs/ptb-cand-longer-ae) is no candidate.
        run_dirs = [path for path in args.run_dirs if not path.name.endswith("-ae")]
        if not run_dirs:
            raise SystemExit("candidates.py: no candidate run directories among those named")
        for path in run_dirs:
            if not path.is_dir():
                raise SystemExit(f"candidates.py: {path}: run directory not found")
        candidates = [read_candidate(path) for path in run_dirs]
    else:
        # Every candidate of the protocol and any other runs/ptb-cand-* directory, but not the logs
        # queue.sh writes beside them (runs/ptb-cand-NAME.log) nor the longer candidate's
        # autoencoder; one not started yet (no directory, or no epoch logged) still holds the choice,
        # unless RECORD keeps its figures from a run directory lost since.
        found = {path.name.removeprefix("ptb-cand-"): path for path in sorted(Path("runs").glob("ptb-cand-*"))
                 if path.is_dir() and not path.name.endswith("-ae")}
        names = list(PROTOCOL) + [name for name in found if name not in PROTOCOL]
        started = {name for name, path in found.items() if (path / "metrics.jsonl").is_file()}
        records = read_records(RECORD)
        names += [name for name in records if name not in names]
        candidates = [read_candidate(found[name]) if name in started else records.get(name, Candidate(name))
                      for name in names]
    stops = stopped(candidates)
    print(table(candidates, stops))
    if not args.markdown:
        _, why = choice(candidates, stops)
        print(f"\nthe choice: {why}")
    if args.record:
        written = write_records(candidates, stops, RECORD)
        print(f"{RECORD}: {', '.join(written) if written else 'nothing new'} recorded", file=sys.stderr if args.markdown else sys.stdout)
    return 0


if __name__ == "__main__":
    sys.exit(main())

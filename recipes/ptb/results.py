"""The table of recipes/ptb/RESULTS.md, built from the finished rows in recipes/ptb/results/*.json.

    python recipes/ptb/results.py            # print the table
    python recipes/ptb/results.py --write    # replace the table between the markers of RESULTS.md

Each JSON file is what ``python recipes/ptb/run.py ... --method NAME --results FILE`` wrote: the
test evaluation of the row's best checkpoint (``seqvae eval RUN --split test --json``) with the
command, output layer, epochs, times and machine. The table shows those figures and nothing else.

A row trained again with another seed is ``NAME-seedN.json`` (``run.seed=N``, N from 1): the
row's table keeps seed 0's figures, and a table of its own gives every seeded row's mean and spread.
"""

from __future__ import annotations

import argparse
import json
import re
import statistics
import sys
from pathlib import Path

HERE = Path(__file__).parent
RESULTS = HERE / "results"
DOCUMENT = HERE / "RESULTS.md"
BEGIN, END = "<!-- table: python recipes/ptb/results.py --write -->", "<!-- end of table -->"
ORDER = (
    "lm", "lm-softmax", "lm-tied", "lm-tied-softmax", "annealing", "cyclical", "aggressive",
    "ae-fb", "ae-fb-softmax", "ae-fb-tied", "ae-fb-tied-softmax", "bn-vae", "mdr", "iaf", "seqvae-best",
    "seqvae-best-sgd",
)
"""The rows in the order of the published table; a METHOD-softmax row is METHOD trained with
``model.output_layer=softmax``, which goes in the full-softmax table."""
LAYERS = {"adaptive": "the adaptive softmax", "softmax": "the full softmax"}
"""The tables, one per output layer (every row of a table uses the same one), in this order."""
PUBLISHED = {  # IW-PPL / KL / MI / AU, Li et al. 2019 via the Optimus appendix (Li et al. 2020)
    "lm": "100.47 / - / - / -",
    "lm-softmax": "100.47 / - / - / -",
    "annealing": "101.40 / 0.00 / 0.00 / 0",
    "cyclical": "108.81 / 1.37 / 1.27 / 5",
    "aggressive": "99.83 / 0.93 / 0.83 / 4",
    "ae-fb": "96.86 / 6.54 / 5.31 / 32",
    "ae-fb-softmax": "96.86 / 6.54 / 5.31 / 32",
    "seqvae-best": "goal: at most 95 / at least 8 / at least 6 / 32",
    "seqvae-best-sgd": "goal: at most 95 / at least 8 / at least 6 / 32",
}
SEEDED = re.compile(r"(?P<row>.+)-seed(?P<seed>[1-9][0-9]*)")
"""A result file of a row trained again with another seed: ``ae-fb-softmax-seed1``."""
SAME_SETTING = ("method", "output_layer", "optimizer", "learning_rate", "init", "iw_samples")
"""What a seed's file must share with the row's own (seed 0), or it is another setting."""
COLUMNS = (
    "row", "output layer", "optimiser", "test IW-PPL (K = 500)", "IW-NLL", "-ELBO", "rec", "KL", "MI", "AU",
    "teacher-forced / free-running NLL", "BLEU", "prior self-BLEU", "epochs (best at)", "training time",
    "published IW-PPL / KL / MI / AU",
)


def _number(value, digits: int = 2) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


OPTIMISERS = {"adam": "Adam", "sgd": "SGD"}


def optimiser(row: dict) -> str:
    """``Adam 0.001`` or ``SGD 0.5, uniform init``: the optimiser, its first rate and the
    initialisation, which move a row's figures as much as its method does (RESULTS.md)."""
    text = f"{OPTIMISERS.get(row['optimizer'], row['optimizer'])} {row['learning_rate']:g}"
    return text + (f", {row['init']} init" if row["init"] != "pytorch" else "")


def row_cells(name: str, row: dict) -> list[str]:
    """The table's cells for one result file; a language model's exact PPL and NLL stand in the
    IW columns, and what needs z is '-'."""
    language_model = "nll" in row and "nll_iw" not in row
    minutes = training_seconds(row) / 60
    return [
        f"`{name}`",
        row["output_layer"],
        optimiser(row),
        _number(row["ppl"] if language_model else row["ppl_iw"]) + (" (exact)" if language_model else ""),
        _number(row["nll"] if language_model else row["nll_iw"]),
        _number(None if language_model else row["elbo"]),
        _number(None if language_model else row["rec"]),
        _number(None if language_model else row["kl"]),
        _number(None if language_model else row["mi"]),
        "-" if language_model else str(row["active_units"]),
        f"{row['nll_teacher_forced']:.2f} / {row['nll_free_running']:.2f}",
        _number(None if language_model else row["bleu"]),
        _number(row.get("prior_self_bleu"), 1),
        f"{row['epochs_trained']} ({row['checkpoint_epochs']})",
        f"{minutes / 60:.1f} h" if minutes >= 60 else f"{minutes:.1f} min",
        PUBLISHED.get(name, "not published at these sizes"),
    ]


def training_seconds(row: dict) -> float:
    """The row's training time over every stage it needed (an autoencoder stage included, even
    when another row shares it): ``stages`` where the row lists them, else its one run's."""
    stages = row.get("stages")
    return sum(stage["train_seconds"] for stage in stages) if stages else row["train_seconds"]


RUN_COLUMNS = ("row", "seed", "machine", "threads", "processes", "test evaluation", "command")


def run_cells(name: str, row: dict) -> list[str]:
    """How one row was produced: its seed, machine, threads and the exact command it ran."""
    return [
        f"`{name}`",
        str(row["seed"]),
        row["machine"],
        str(row["threads"]),
        str(row.get("processes", 1)),  # written since data-parallel training came; one before
        f"{row['eval_seconds']:.0f} s" if row["eval_seconds"] < 120 else f"{row['eval_seconds'] / 60:.0f} min",
        f"`{row['command']}`",
    ]


def _markdown(columns: tuple[str, ...], body: list[list[str]]) -> list[str]:
    return ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)] + ["| " + " | ".join(cells) + " |" for cells in body]


def _read_rows() -> tuple[dict[str, dict], dict[str, list[dict]]]:
    """The rows (``NAME.json``, seed 0) and each row's other seeds (``NAME-seedN.json``, in seed
    order), with a one-line SystemExit for a file that is not a row or not the row's setting."""
    rows, seeds = {}, {}
    for path in sorted(RESULTS.glob("*.json")):
        row = json.loads(path.read_text(encoding="utf-8"))
        missing = [key for key in ("output_layer", "optimizer", "learning_rate", "init") if key not in row]
        if missing:
            raise SystemExit(f"results.py: {path}: no {missing[0]!r} (run.py --results writes it)")
        seeded = SEEDED.fullmatch(path.stem)
        if seeded is None:
            rows[path.stem] = row
            continue
        if row.get("seed") != int(seeded["seed"]):
            raise SystemExit(f"results.py: {path}: its seed is {row.get('seed')!r}, its name says {seeded['seed']}")
        seeds.setdefault(seeded["row"], []).append(row)
    unknown = sorted(set(rows) - set(ORDER))
    if unknown:
        raise SystemExit(f"results.py: {RESULTS}/{unknown[0]}.json is not a row of the table ({', '.join(ORDER)})")
    for name, row in rows.items():
        if row["output_layer"] not in LAYERS:
            raise SystemExit(f"results.py: {RESULTS}/{name}.json: output_layer {row['output_layer']!r} has no table")
        if row.get("seed", 0) != 0:
            raise SystemExit(f"results.py: {RESULTS}/{name}.json: seed {row['seed']}; another seed's file is {name}-seed{row['seed']}.json")
    for name, others in seeds.items():
        if name not in rows:
            raise SystemExit(f"results.py: {RESULTS}/{name}-seed{others[0]['seed']}.json: no {name}.json (seed 0) to go with it")
        for other in others:
            differs = [key for key in SAME_SETTING if other.get(key) != rows[name].get(key)]
            if differs:
                raise SystemExit(
                    f"results.py: {RESULTS}/{name}-seed{other['seed']}.json: {differs[0]} {other.get(differs[0])!r} "
                    f"is not {name}.json's {rows[name].get(differs[0])!r} (another setting, not another seed)"
                )
        others.sort(key=lambda other: other["seed"])
    return rows, seeds


SEED_COLUMNS = ("row", "seeds", "test IW-PPL (K = 500)", "IW-NLL", "KL", "MI", "AU", "each seed's IW-PPL")


def spread(values: list[float], digits: int = 2) -> str:
    """``mean ± sd`` with the sample standard deviation (n - 1), the seeds' spread."""
    return f"{statistics.mean(values):.{digits}f} ± {statistics.stdev(values):.{digits}f}"


def seed_cells(name: str, runs: list[dict]) -> list[str]:
    """Mean and spread over a row's seeds (seed 0 first); a language model's exact PPL and NLL
    stand in the IW columns, as in the row's table."""
    language_model = "nll" in runs[0] and "nll_iw" not in runs[0]
    ppl = [run["ppl"] if language_model else run["ppl_iw"] for run in runs]
    nll = [run["nll"] if language_model else run["nll_iw"] for run in runs]

    def of(key: str, digits: int = 2) -> str:
        return "-" if language_model else spread([run[key] for run in runs], digits)

    return [
        f"`{name}`",
        ", ".join(str(run.get("seed", 0)) for run in runs),
        spread(ppl) + (" (exact)" if language_model else ""),
        spread(nll),
        of("kl"),
        of("mi"),
        of("active_units", 1),
        ", ".join(f"{value:.2f}" for value in ppl),
    ]


def table() -> str:
    """The Markdown tables of every finished row, in the order of the published table: the
    figures, one table per output layer, the spread over seeds where a row has more than one,
    then how each row was run."""
    rows, seeds = _read_rows()
    names = [name for name in ORDER if name in rows]
    lines = []
    for layer, words in LAYERS.items():
        chosen = [name for name in names if rows[name]["output_layer"] == layer]
        if chosen:
            lines += [f"Rows with {words} (`model.output_layer = \"{layer}\"`):", ""]
            lines += _markdown(COLUMNS, [row_cells(name, rows[name]) for name in chosen]) + [""]
    seeded = [name for name in names if name in seeds]
    if seeded:
        lines += ["Rows trained with more than one seed (mean ± sample standard deviation over the seeds):", ""]
        lines += _markdown(SEED_COLUMNS, [seed_cells(name, [rows[name], *seeds[name]]) for name in seeded]) + [""]
    runs = _markdown(RUN_COLUMNS, [run_cells(name, row) for name in names for row in [rows[name], *seeds.get(name, [])]])
    return "\n".join(lines + ["How each row was run (from the same files):", ""] + runs)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--write", action="store_true", help=f"replace the table in {DOCUMENT.name}")
    args = parser.parse_args(argv)
    text = table()
    if not args.write:
        print(text)
        return 0
    document = DOCUMENT.read_text(encoding="utf-8")
    if BEGIN not in document or END not in document:
        print(f"results.py: {DOCUMENT}: the table markers are missing", file=sys.stderr)
        return 2
    head, rest = document.split(BEGIN, 1)
    DOCUMENT.write_text(head + BEGIN + "\n" + text + "\n" + END + rest.split(END, 1)[1], encoding="utf-8")
    print(f"wrote the tables of {len(list(RESULTS.glob('*.json')))} rows to {DOCUMENT}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

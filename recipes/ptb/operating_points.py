"""Operating points on the Penn Treebank: one model family at Li et al.'s sizes trained at several
rates, from the likelihood row to a pure autoencoder, each judged as a user would use it.

    python recipes/ptb/operating_points.py --data-dir ../shared/data/ptb [--rows ae-fb,ae,...] [--output FILE]

Each row is a run of recipes/ptb/run.py (ROWS: the command's arguments and the run directory it
trains): trained if it has not begun, continued if it was interrupted (a finished run returns at
once), with its prior fitted after training as for every run. The judge is the PTB ``lm`` row.
Each row is then evaluated on the test split as ``seqvae eval RUN --lm runs/ptb-lm`` evaluates it
(IW-PPL under N(0, I) and under the fitted prior, KL, MI, AU, reconstruction BLEU, forward and
reverse perplexity and self-BLEU of prior samples under both priors, homotopy endpoint BLEU and
path fluency), written to --output (JSON, a row at a time; a row evaluated again replaces its
record), the Markdown table is printed and the figure (rate against use) is written beside the
JSON (same name, .png); recipes/ptb/OPERATING_POINTS.md holds the finished table.

Each training takes hours on a CPU; run it in the background with one thread
(OMP_NUM_THREADS=1 ... run.threads=1 is passed to every row) and run the command again after an
interruption: finished rows are reused, the interrupted one continues from its last checkpoint.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from seqvae import SeqVAEError, load_run
from seqvae.allocator import keep_freed_memory
from seqvae.judge import load_judge
from seqvae.report import operating_points_table, plot_operating_points, record_operating_point

sys.path.insert(0, str(Path(__file__).parent))
import run as ptb  # noqa: E402

ROWS = {
    "lm": (["--method", "lm"], "runs/ptb-lm"),
    "ae-fb": (["--method", "ae-fb"], "runs/ptb-ae-fb"),
    "ae": (["--method", "ae-fb"], "runs/ptb-ae-fb-ae"),
    "mdr-15": (["--method", "mdr", "objective.free_bits_lambda=15", "run.dir=runs/ptb-mdr-15"], "runs/ptb-mdr-15"),
    "mdr-30": (["--method", "mdr", "objective.free_bits_lambda=30", "run.dir=runs/ptb-mdr-30"], "runs/ptb-mdr-30"),
}
"""Each row: the arguments of recipes/ptb/run.py that train it and the run directory evaluated.
``lm`` is the judge; ``ae`` is stage 1 of ``ae-fb`` (beta = 0, z sampled), trained by the same
command; the minimum desired rate (Pelsmaeker & Aziz 2020) at 15 and 30 nats lies between the
likelihood row's rate (about 8 nats) and the autoencoder's."""
JUDGED = ("ae-fb", "ae", "mdr-15", "mdr-30")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", required=True)
    parser.add_argument("--rows", default=",".join(JUDGED), help=f"rows to train and evaluate, of {', '.join(JUDGED)}")
    parser.add_argument("--output", default="recipes/ptb/operating-points/results.json",
                        help="JSON list of rows: a row evaluated again replaces its record, the others are kept")
    parser.add_argument("--iw-samples", type=int, default=500)
    args = parser.parse_args(argv)
    keep_freed_memory()
    names = [name for name in args.rows.split(",") if name]
    unknown = [name for name in names if name not in JUDGED]
    if unknown:
        print(f"error: --rows: unknown row '{unknown[0]}'; choose from {', '.join(JUDGED)}", file=sys.stderr)
        return 2
    results = []
    for name in ("lm", *names):
        arguments, run_dir = ROWS[name]
        # A run's prior is fitted when its training has finished: such a row is not handed to run.py
        # again (ae, stage 1 of ae-fb, is then evaluated while ae-fb's stage 2 trains elsewhere).
        if name == "lm" or not (Path(run_dir) / "prior.json").is_file():
            status = ptb.main(["--data-dir", args.data_dir, *arguments, "--resume", "--eval", "none", "run.threads=1"])
            if status != 0:
                return status
        if not (Path(run_dir) / "checkpoints" / "best.pt").is_file():
            print(f"{run_dir}: stopped before its end; run this command again to continue it", file=sys.stderr)
            return 1
        if name == "lm":
            continue
        try:
            judge = load_judge(ROWS["lm"][1])
            figures = load_run(run_dir).evaluate("test", iw_samples=args.iw_samples, judge=judge, progress=True)
        except SeqVAEError as error:
            print(f"error: {error}", file=sys.stderr)
            return 2
        try:
            results = record_operating_point(
                args.output, {"row": name, "command": arguments, "run_dir": run_dir, **figures}, list(JUDGED)
            )
        except SeqVAEError as error:
            print(f"error: {error}", file=sys.stderr)
            return 2
        print(f"{name}: written to {args.output}")
    print(operating_points_table(results))
    if results:
        figure = plot_operating_points(results, Path(args.output).with_suffix(".png"), title="Penn Treebank (Li et al.'s sizes), test split")
        print(f"figure: {figure}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

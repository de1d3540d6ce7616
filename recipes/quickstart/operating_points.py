"""Operating points on the embedded corpus: the quickstart's model trained at several rates, from
the VAE of the quickstart to a pure autoencoder, each judged as a user would use it.

    python recipes/quickstart/operating_points.py [--rows vae,mdr-10,...] [--output FILE]

Each row is the quickstart config with the overrides of ROWS, trained into runs/op-NAME (a
finished row is reused, an interrupted one resumed), its prior fitted after training as for every
run. A language model of the same corpus and sizes (runs/op-lm) is the judge. Each row is
evaluated on the test split (seqvae eval --lm: IW-PPL under N(0, I) and under the fitted prior,
KL, MI, AU, reconstruction BLEU, forward and reverse perplexity and self-BLEU of prior samples
under both priors, homotopy endpoint BLEU and path fluency), then edited: the tense vector
(future) applied to every non-future validation sentence at the scales of EDIT_SCALES, judged by
the share that reached the future, the share of their other four attributes kept, and BLEU to
the input, beside the BLEU of the perfect edits, and the judge's forward perplexity of the
edits. The figures go to --output (JSON, one object per row; rows evaluated again replace
theirs), the Markdown tables are printed and the figure (rate against use) is written beside
the JSON (same name, .png).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from seqvae import SeqVAEError, load_config, load_run, train
from seqvae.allocator import keep_freed_memory
from seqvae.attributes import judge_edits, transfer
from seqvae.judge import load_judge
from seqvae.report import edits_table, operating_points_table, plot_operating_points, record_operating_point

HERE = Path(__file__).parent
sys.path.insert(0, str(HERE))
from run import CONFIG, write_quickstart_corpus  # noqa: E402

MDR = ["objective.free_bits=mdr", "annealing.schedule=constant", "annealing.beta=1"]
"""The minimum desired rate as its authors train it: beta = 1 from the start (below the multiplier,
an annealed beta would leave the KL a net reward and it diverges)."""
ROWS = {
    "vae": [],
    "mdr-10": [*MDR, "objective.free_bits_lambda=10"],
    "mdr-20": [*MDR, "objective.free_bits_lambda=20"],
    "mdr-40": [*MDR, "objective.free_bits_lambda=40"],
    "beta-0.3": ["annealing.beta=0.3", "train.best_metric=rec"],
    "beta-0.1": ["annealing.beta=0.1", "train.best_metric=rec"],
    "ae": ["annealing.schedule=constant", "annealing.beta=0", "train.best_metric=rec"],
    "ae-30": ["annealing.schedule=constant", "annealing.beta=0", "train.best_metric=rec", "train.epochs=30"],
}
"""Each row's overrides of the quickstart config: the quickstart's VAE (KL annealed to beta = 1, word
dropout 0.6, no free bits), the minimum desired rate at 10, 20 and 40 nats (Pelsmaeker & Aziz
2020; no annealing), beta-VAEs whose KL weight rises to 0.3 and 0.1 (Higgins et al. 2017; best
checkpoint on reconstruction, as their bound is not the ELBO), and the autoencoder (beta = 0, z
still sampled, best checkpoint on reconstruction) trained for 10 epochs and for 30."""
JUDGE = ["model.latent_dim=0", "objective.free_bits=none", "objective.word_dropout=0"]
EDIT_SCALES = (1.0, 1.5, 2.0)


def trained(name: str, overrides: list[str]) -> Path:
    config = load_config(CONFIG, [f"run.dir=runs/op-{name}", *overrides])
    run_dir = Path(config.run.dir)
    if (run_dir / "checkpoints" / "last.pt").is_file():
        if load_run(run_dir, checkpoint="last").checkpoint.epoch >= config.train.epochs:
            return run_dir  # finished earlier: reused as it is
        result = train(config, resume=True, echo=print)
    else:
        write_quickstart_corpus(config)
        result = train(config, echo=print)
    if not result.finished:
        raise SeqVAEError(f"{run_dir}: training stopped before its end; run again to resume it")
    return run_dir


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", default=",".join(ROWS), help=f"rows to train and evaluate, of {', '.join(ROWS)}")
    parser.add_argument("--output", default="runs/operating-points.json",
                        help="JSON list of rows: a row evaluated again replaces its record, the others are kept")
    parser.add_argument("--iw-samples", type=int, default=500)
    args = parser.parse_args(argv)
    keep_freed_memory()
    try:
        names = [name for name in args.rows.split(",") if name]
        unknown = [name for name in names if name not in ROWS]
        if unknown:
            raise SeqVAEError(f"--rows: unknown row '{unknown[0]}'; choose from {', '.join(ROWS)}")
        judge = load_judge(trained("lm", JUDGE))
        results = []
        for name in names:
            run = load_run(trained(name, ROWS[name]))
            figures = run.evaluate("test", iw_samples=args.iw_samples, judge=judge, progress=True)
            edit = judge_edits(transfer(run, "tense", "future", scales=EDIT_SCALES, limit=1000, progress=True), judge)
            figures["edit"] = {
                f"{scale:g}": {"reached": edit.attribute_rates[scale], "others_kept": edit.others_kept[scale],
                               "bleu_to_input": edit.bleu_to_input[scale], "transfer_rate": edit.rates[scale],
                               "lm_forward_ppl": edit.lm_forward_ppl[scale]}
                for scale in EDIT_SCALES
            }
            if edit.perfect_bleu_to_input is not None:
                figures["edit"]["perfect"] = {"bleu_to_input": edit.perfect_bleu_to_input}
            figures["edit"]["0"] = {"reached": edit.baseline_attribute_rate, "others_kept": edit.baseline_others_kept,
                                    "bleu_to_input": edit.baseline_bleu_to_input, "transfer_rate": edit.baseline_rate,
                                    "lm_forward_ppl": edit.baseline_lm_forward_ppl}
            figures["edit"]["inputs"] = {"lm_forward_ppl": edit.inputs_lm_forward_ppl}
            results = record_operating_point(args.output, {"row": name, "overrides": ROWS[name], **figures}, list(ROWS))
            print(f"{name}: written to {args.output}")
    except SeqVAEError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(operating_points_table(results))
    print(edits_table(results))
    if results:
        figure = plot_operating_points(results, Path(args.output).with_suffix(".png"), title="embedded corpus (quickstart sizes), test split")
        print(f"figure: {figure}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

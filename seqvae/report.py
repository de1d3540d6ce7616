"""A run report: the training curves as a PNG and a Markdown summary of what the run learned.

``write_report(run_dir)`` writes ``report/training.png`` (reconstruction, KL and beta over training
steps, the picture that shows posterior collapse as it happens: the KL falling to zero while the
reconstruction stalls) and ``report/report.md`` (the setting, the data, the per-epoch validation
table, the latest ``seqvae eval`` results saved in ``eval/``, prior samples, reconstructions and
an interpolation decoded from the checkpoint).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from seqvae.errors import SeqVAEError
from seqvae.files import atomic_write_json, atomic_write_text, atomic_write_with, cannot_write
from seqvae.run_directory import read_metric_records

EVAL_DIR = "eval"
REPORT_DIR = "report"


@dataclass
class TrainingHistory:
    """The records of ``metrics.jsonl``: training windows and validation passes, by step."""

    train: list[dict[str, Any]]
    valid: list[dict[str, Any]]


def read_history(run_dir: str | Path) -> TrainingHistory:
    """Read ``RUN/metrics.jsonl``. A resumed run may log a step twice; the later record wins."""
    path = Path(run_dir) / "metrics.jsonl"
    if not path.is_file():
        raise SeqVAEError(f"{path}: no training log (is {run_dir} a run directory written by 'seqvae train'?)")
    by_key: dict[tuple[str, int], dict[str, Any]] = {}
    for _, record in read_metric_records(path):
        by_key[(record["split"], record["step"])] = record
    records = sorted(by_key.values(), key=lambda record: record["step"])
    return TrainingHistory(
        train=[r for r in records if r["split"] == "train"], valid=[r for r in records if r["split"] == "valid"]
    )


def plot_training(history: TrainingHistory, path: str | Path, *, title: str = "") -> Path:
    """Three panels over training steps: reconstruction, KL (training windows as lines, validation
    as markers) and the KL weight beta. Written as a PNG with the non-interactive backend."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    if not history.train and not history.valid:
        raise SeqVAEError(f"{path}: nothing to plot, the training log is empty")
    figure, (rec_axis, kl_axis, beta_axis) = plt.subplots(3, 1, figsize=(8, 8), sharex=True)
    panels = ((rec_axis, "rec", "reconstruction (nats / sentence)"), (kl_axis, "kl", "KL (nats / sentence)"))
    for axis, key, label in panels:
        # a language model logs its exact NLL where a VAE logs rec, and no KL
        train = [(r["step"], r.get(key, r.get("nll") if key == "rec" else None)) for r in history.train]
        valid = [(r["step"], r.get(key, r.get("nll") if key == "rec" else None)) for r in history.valid]
        train, valid = [p for p in train if p[1] is not None], [p for p in valid if p[1] is not None]
        if train:
            axis.plot([step for step, _ in train], [value for _, value in train], lw=1, label="train")
        if valid:
            axis.plot([step for step, _ in valid], [value for _, value in valid], "o-", ms=4, label="valid")
        if key == "kl" and any("mi" in r for r in history.valid):
            measured = [r for r in history.valid if "mi" in r]
            axis.plot([r["step"] for r in measured], [r["mi"] for r in measured], "s--", ms=4, label="valid MI")
        axis.set_ylabel(label)
        axis.grid(alpha=0.3)
        if train or valid:
            axis.legend(loc="upper right")
    if history.train:
        beta_axis.plot([r["step"] for r in history.train], [r["beta"] for r in history.train], color="tab:green")
    beta_axis.set_ylabel("beta (KL weight)")
    beta_axis.set_xlabel("training step")
    beta_axis.grid(alpha=0.3)
    if title:
        import textwrap

        figure.suptitle(textwrap.fill(title, 90), fontsize=10)
    return save_png(figure, path)


def save_png(figure, path: str | Path) -> Path:
    """Write ``figure`` to ``path`` whole or not at all (a temporary file renamed), and close it."""
    import matplotlib.pyplot as plt

    figure.tight_layout()
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_with(path, lambda handle: figure.savefig(handle, format="png", dpi=100))
    finally:
        plt.close(figure)
    return path


def save_evaluation(run_dir: str | Path, split: str, checkpoint: str, metrics: dict[str, Any], settings: dict) -> Path:
    """Keep a ``seqvae eval`` result in ``RUN/eval/<split>-<checkpoint>.json`` for the report."""
    path = Path(run_dir) / EVAL_DIR / f"{split}-{checkpoint}.json"
    try:
        path.parent.mkdir(exist_ok=True)
    except OSError as error:
        raise cannot_write(path.parent, error) from None
    atomic_write_json(path, {"split": split, "checkpoint": checkpoint, "settings": settings, "metrics": metrics})
    return path


def saved_evaluations(run_dir: Path) -> list[dict[str, Any]]:
    """The results ``seqvae eval`` kept in ``RUN/eval/``, by file name."""
    saved = []
    for path in sorted((run_dir / EVAL_DIR).glob("*.json")):
        try:
            saved.append(json.loads(path.read_text(encoding="utf-8")))
        except ValueError:
            raise SeqVAEError(f"{path}: not a saved evaluation (delete it or rerun 'seqvae eval')") from None
    return saved


def _value(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}" if abs(value) < 1e4 else f"{value:.1f}"
    if isinstance(value, list):
        return " ".join(f"{item:.2f}" for item in value)
    if isinstance(value, dict):
        return ", ".join(f"{name} {_value(item)}" for name, item in value.items())
    return str(value)


def _table(header: list[str], rows: list[list[Any]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines.extend("| " + " | ".join(_value(cell) for cell in row) + " |" for row in rows)
    return lines


def _escape(sentence: str) -> str:
    if not sentence.strip():
        return "*(empty)*"
    return sentence.replace("|", "\\|").replace("<", "&lt;").replace(">", "&gt;")


def write_report(
    run_dir: str | Path,
    *,
    output_dir: str | Path | None = None,
    checkpoint: str = "best",
    samples: int = 5,
    reconstructions: int = 3,
    interpolation: tuple[str, str] | None = None,
    steps: int = 6,
    seed: int = 0,
    device: str = "auto",
) -> dict[str, Path]:
    """Write the plot and the Markdown summary of a run; returns {"plot": path, "markdown": path}.

    The interpolation runs between the posterior means of ``interpolation`` (two sentences), by
    default the first two validation sentences; the reconstructions are the first validation
    sentences. Both use the checkpoint ``checkpoint``."""
    from seqvae.data.corpus import load_corpus
    from seqvae.latent_map import LATENT_MAP_SENTENCES, plot_latent_map
    from seqvae.runs import load_run

    run_dir = Path(run_dir)
    history = read_history(run_dir)
    run = load_run(run_dir, checkpoint=checkpoint, device=device)
    output = Path(output_dir) if output_dir is not None else run_dir / REPORT_DIR
    config = run.config
    model = config.model
    language_model = run.model.is_language_model
    setting = (
        f"{model.encoder} encoder, {model.decoder} decoder, z ({model.latent_dim} dims) as "
        f"{'+'.join(model.injection)}, {model.output_layer} output layer; annealing {config.annealing.schedule}, word dropout "
        f"{config.objective.word_dropout}, free bits {config.objective.free_bits}"
    )
    if language_model:
        setting = f"{model.decoder} language model (no z), {model.output_layer} output layer, word dropout {config.objective.word_dropout}"
    plot = plot_training(history, output / "training.png", title=f"{run_dir.name}: {setting}")

    lines = [f"# Run report: {run_dir}", "", setting + ".", ""]
    data_path = run_dir / "data.json"
    if data_path.is_file():
        data = json.loads(data_path.read_text(encoding="utf-8"))
        header = ["split", *next(iter(data.values())).keys()]
        lines += ["## Data", "", *_table(header, [[split, *values.values()] for split, values in data.items()]), ""]
    lines += ["## Training", "", f"![reconstruction, KL and beta over training steps]({plot.name})", ""]
    if history.valid:
        wanted = ("nll", "ppl", "rec", "kl", "elbo", "ppl_elbo", "ppl_iw", "mi", "active_units", "free_running_gap", "bleu", "prior_self_bleu")
        keys = [key for key in wanted if key in history.valid[-1]]
        rows = [[r["epoch"], r["step"], *(r.get(key, "-") for key in keys), "; ".join(r.get("warnings", [])) or "-"] for r in history.valid]
        lines += ["Validation after each epoch:", "", *_table(["epoch", "step", *keys, "warnings"], rows), ""]

    lines += ["## Final metrics", ""]
    saved = saved_evaluations(run_dir)
    if saved:
        for evaluation in saved:
            settings = ", ".join(f"{key} {value}" for key, value in evaluation.get("settings", {}).items())
            lines += [f"`seqvae eval` on **{evaluation['split']}**, {evaluation['checkpoint']} checkpoint ({settings}):", ""]
            metrics = evaluation["metrics"]
            lines += _table(["measure", "value"], [[key, value] for key, value in metrics.items() if key != "warnings"])
            lines += ["", "Warnings: " + ("; ".join(metrics.get("warnings", [])) or "none"), ""]
    elif history.valid:
        best = min(history.valid, key=lambda r: r.get("elbo", r.get("nll", float("inf"))))
        lines += [
            f"No saved `seqvae eval` result yet (run `seqvae eval {run_dir} --split test` for the full suite); "
            f"the validation record with the lowest {'NLL' if language_model else 'ELBO'} (epoch {best['epoch']}):",
            "",
            *_table(["measure", "value"], [[k, v] for k, v in best.items() if k not in ("split", "warnings")]),
            "",
        ]

    if language_model:  # no z: ancestral samples, no reconstructions or interpolations
        from seqvae.generation import Decoding

        lines += [f"## Samples ({checkpoint} checkpoint)", "", f"Sentences sampled from the language model, seed {seed}:", ""]
        drawn = run.sample(samples, seed=seed, decoding=Decoding("sample"))
        lines += [f"{i}. {_escape(sentence)}" for i, sentence in enumerate(drawn, start=1)]
        markdown = output / "report.md"
        atomic_write_text(markdown, "\n".join(lines) + "\n")
        return {"plot": plot, "markdown": markdown}
    lines += [f"## Samples from the prior ({checkpoint} checkpoint)", "", f"Greedy decodes of z ~ N(0, I), seed {seed}:", ""]
    lines += [f"{i}. {_escape(sentence)}" for i, sentence in enumerate(run.sample(samples, seed=seed, prior="standard"), start=1)]
    if run.has_fitted_prior():
        fitted = run.prior_density("fitted")
        lines += ["", f"Greedy decodes of z from the fitted prior ({fitted.components} x {fitted.covariance} Gaussian mixture), seed {seed}:", ""]
        drawn = run.sample(samples, seed=seed, prior="fitted")
        lines += [f"{i}. {_escape(sentence)}" for i, sentence in enumerate(drawn, start=1)]
    valid_sentences = load_corpus(config.data).splits.get("valid", [])
    latent = None
    if valid_sentences:
        shown = valid_sentences[:LATENT_MAP_SENTENCES]
        labels = run.labels("valid", len(valid_sentences))
        latent = plot_latent_map(run, shown, output / "latent.png", labels=labels[: len(shown)] if labels else None, seed=seed)
        lines += ["", "## Latent space", "",
                  f"The posterior means of the first {len(shown)} validation sentences on their first two principal "
                  "components, coloured by length" + (" and by each attribute" if labels else "") + ", with codes drawn "
                  "from the prior(s) over them (x); right, the KL of each dimension:", "",
                  f"![validation codes and per-dimension KL]({latent.name})"]
    if reconstructions and valid_sentences:
        originals = valid_sentences[:reconstructions]
        lines += ["", "## Reconstructions", "", "Greedy decodes of the posterior means of validation sentences:", ""]
        rows = [[_escape(a), _escape(b)] for a, b in zip(originals, run.reconstruct(originals))]
        lines += _table(["input", "reconstruction"], rows)
    if interpolation is None and len(valid_sentences) >= 2:
        interpolation = (valid_sentences[0], valid_sentences[1])
    if interpolation is not None:
        first, second = interpolation
        lines += ["", "## Interpolation", "", "Greedy decodes along the line between the posterior means of", ""]
        lines += [f"- A: {_escape(first)}", f"- B: {_escape(second)}", ""]
        path = run.interpolate(first, second, steps=steps)
        lines += _table(["t", "sentence"], [[f"{t:.2f}", _escape(sentence)] for t, sentence in path])
    markdown = output / "report.md"
    atomic_write_text(markdown, "\n".join(lines) + "\n")
    return {"plot": plot, "markdown": markdown, **({"latent": latent} if latent is not None else {})}


def record_operating_point(path: str | Path, record: dict, order: list[str]) -> list[dict]:
    """Write ``record`` (one row's figures, keyed "row") into the JSON list of operating points at
    ``path``, replacing an earlier record of the same row and keeping the others, ordered as
    ``order`` (rows not in it last); returns every record. A recipe run for some rows thus adds
    them to the table without losing the rest."""
    path = Path(path)
    records = []
    if path.is_file():
        try:
            records = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
            raise SeqVAEError(f"{path}: not a JSON list of operating points ({error}); move it away to start a new one") from None
        if not isinstance(records, list) or not all(isinstance(r, dict) and "row" in r for r in records):
            raise SeqVAEError(f"{path}: not a JSON list of operating points (objects with a 'row'); move it away to start a new one")
    records = [r for r in records if r["row"] != record["row"]] + [record]
    rank = {name: index for index, name in enumerate(order)}
    records.sort(key=lambda r: rank.get(r["row"], len(rank)))
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, json.dumps(records, indent=1) + "\n")
    return records


def operating_points_table(results: list[dict]) -> str:
    """The Markdown table of operating points (recipes/*/operating_points.py): one line per row and
    prior, from each row's ``seqvae eval --lm`` figures and, where measured, its tense edit (the
    scale with the best transfer rate)."""
    lines = [
        "| row | prior | IW-PPL | KL | MI | AU | rec. BLEU | fwd PPL | rev PPL | self-BLEU | homotopy end BLEU | path / end fwd PPL | tense reached | others kept | BLEU to input |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        edits = {key: r["edit"][key] for key in _edit_scales(r.get("edit", {})) if float(key) > 0}
        scale = max(edits, key=lambda key: edits[key]["transfer_rate"]) if edits else None
        edit = (f"{edits[scale]['reached']:.3f} (x{scale}) | {edits[scale]['others_kept']:.3f} | {edits[scale]['bleu_to_input']:.1f}"
                if scale else "- | - | -")
        for prior, prefix, ppl in (("N(0, I)", "prior", "ppl_iw"), ("fitted", "fitted_prior", "ppl_iw_fitted")):
            if f"{prefix}_lm_forward_ppl" not in r:
                continue
            lines.append(
                f"| {r['row']} | {prior} | {r[ppl]:.2f} | {r['kl']:.2f} | {r['mi']:.2f} | {r['active_units']} | {r['bleu']:.1f} | "
                f"{r[prefix + '_lm_forward_ppl']:.2f} | {r.get(prefix + '_lm_reverse_ppl', float('nan')):.2f} | {r[prefix + '_self_bleu']:.1f} | "
                f"{r['homotopy_endpoint_bleu']:.1f} | {r['homotopy_path_lm_forward_ppl'] / r['homotopy_endpoint_lm_forward_ppl']:.2f} | "
                f"{edit} |"
            )
    reference = next((r for r in results if "lm_real_ppl" in r or "real_self_bleu" in r), None)
    if reference is not None:
        parts = []
        if "lm_real_ppl" in reference:
            parts.append(f"the judge's perplexity {reference['lm_real_ppl']:.2f}")
        if "real_self_bleu" in reference:
            parts.append(f"self-BLEU {reference['real_self_bleu']:.1f} (as many sentences as the prior samples)")
        lines += ["", "Real test sentences: " + ", ".join(parts) + "."]
    return "\n".join(lines)


def _edit_scales(edit: dict) -> list[str]:
    """The scales of a recorded edit ("0" for the unchanged codes, "1", "1.5", ...) in order,
    without its reference entries ("perfect", "inputs")."""
    return sorted((key for key in edit if key.replace(".", "", 1).isdigit()), key=float)


def edits_table(results: list[dict]) -> str:
    """The Markdown table of each operating point's tense edits (embedded corpus): per row, the
    unchanged codes (scale 0) and every scale, with the share that reached the target, the other
    attributes kept, the transfer rate, BLEU to the input and, where judged, the forward
    perplexity; the perfect edits' BLEU and the inputs' perplexity head the table."""
    edited = [r for r in results if r.get("edit")]
    if not edited:
        return ""
    lines = []
    perfect = next((r["edit"]["perfect"]["bleu_to_input"] for r in edited if "perfect" in r["edit"]), None)
    inputs = next((r["edit"]["inputs"]["lm_forward_ppl"] for r in edited if "inputs" in r["edit"]), None)
    if perfect is not None or inputs is not None:
        reference = [f"perfect edits: BLEU to the input {perfect:.1f}" if perfect is not None else "",
                     f"the inputs' forward PPL {inputs:.2f}" if inputs is not None else ""]
        lines += ["; ".join(part for part in reference if part) + ".", ""]
    lines += ["| row | scale | reached | others kept | transfer rate | BLEU to input | fwd PPL |", "|---|---|---|---|---|---|---|"]
    for r in edited:
        for key in _edit_scales(r["edit"]):
            e = r["edit"][key]
            ppl = f"{e['lm_forward_ppl']:.2f}" if "lm_forward_ppl" in e else "-"
            lines.append(f"| {r['row']} | {key} | {e['reached']:.3f} | {e['others_kept']:.3f} | {e['transfer_rate']:.3f} | "
                         f"{e['bleu_to_input']:.1f} | {ppl} |")
    return "\n".join(lines)


def plot_operating_points(results: list[dict], path: str | Path, *, title: str = "") -> Path:
    """Four panels with the rate (test KL, nats per sentence, log scale) on the x axis, one point
    per row of an operating-points recipe: reconstruction and homotopy endpoint BLEU; forward and
    reverse perplexity of prior samples under the judge, under N(0, I) and the fitted prior, with
    the judge's perplexity of the real test split as a line; their self-BLEU. Written as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [r for r in results if "prior_lm_forward_ppl" in r]
    if not rows:
        raise SeqVAEError(f"{path}: nothing to plot, no row was judged by a language model")
    rows.sort(key=lambda r: r["kl"])
    rate = [r["kl"] for r in rows]
    figure, axes = plt.subplots(2, 2, figsize=(10, 7), sharex=True)
    priors = ("N(0, I)", "fitted prior")
    judge_line, real_line = ("lm_real_ppl", "the judge on real test text"), ("real_self_bleu", "real test text")
    panels = (  # axis, label, (key, name) of each series, the reference line (key, name) or None
        (axes[0][0], "BLEU to the input", (("bleu", "reconstruction"), ("homotopy_endpoint_bleu", "homotopy endpoints")), None),
        (axes[0][1], "forward PPL of prior samples", tuple(zip(("prior_lm_forward_ppl", "fitted_prior_lm_forward_ppl"), priors)), judge_line),
        (axes[1][0], "reverse PPL of prior samples", tuple(zip(("prior_lm_reverse_ppl", "fitted_prior_lm_reverse_ppl"), priors)), judge_line),
        (axes[1][1], "self-BLEU of prior samples", tuple(zip(("prior_self_bleu", "fitted_prior_self_bleu"), priors)), real_line),
    )
    for axis, label, series, line in panels:
        for key, name in series:
            points = [(x, r[key]) for x, r in zip(rate, rows) if r.get(key) is not None]
            axis.plot([x for x, _ in points], [y for _, y in points], "o", ms=6, alpha=0.8, label=name)
        real = [r[line[0]] for r in rows if line and line[0] in r]
        if real:
            axis.axhline(real[0], color="grey", ls="--", lw=1, label=line[1])
        if line is judge_line:
            axis.set_yscale("log")
        axis.set_ylabel(label)
        axis.set_xscale("log")
        axis.grid(alpha=0.3, which="both")
        axis.legend(fontsize=8)
    for r, x in zip(rows, rate):
        axes[0][0].annotate(r["row"], (x, r["bleu"]), textcoords="offset points", xytext=(3, 4), fontsize=8)
    for axis in axes[1]:
        axis.set_xlabel("rate: KL(q(z|x) || N(0, I)), nats per sentence")
    if title:
        figure.suptitle(title, fontsize=10)
    return save_png(figure, path)

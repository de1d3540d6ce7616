"""The metrics log of a run (``metrics.jsonl``): the training terms averaged over windows of
``train.log_every`` steps, and one record per validation pass, rounded to six digits."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from seqvae.files import atomic_write_text, cannot_write
from seqvae.run_directory import read_metric_records
from seqvae.losses import LossTerms


def round_figure(value):
    """Six significant digits for the metrics file; counts, names and lists stay as they are."""
    return float(f"{value:.6g}") if isinstance(value, float) else value


class MetricWindow:
    """Running sums of the training terms between two log records, and of what some methods add:
    ``multiplier`` (the minimum-desired-rate |lambda|) and ``inner_steps`` (aggressive training's
    encoder-only updates before each decoder update)."""

    KEYS = ("loss", "rec", "kl", "kl_penalty")

    def __init__(self, sums: dict[str, float] | None = None) -> None:
        self.sums = dict(sums) if sums else {key: 0.0 for key in (*self.KEYS, "steps")}

    def add(self, terms: LossTerms, **extra: float) -> None:
        values = (terms.loss, terms.reconstruction, terms.kl, terms.kl_penalty)
        for key, value in zip(self.KEYS, values):
            self.sums[key] += value
        if terms.multiplier is not None:
            extra["multiplier"] = terms.multiplier
        if terms.kl_std is not None:
            extra["kl_std"] = terms.kl_std
        for key, value in extra.items():
            self.sums[key] = self.sums.get(key, 0.0) + value
        self.sums["steps"] += 1

    def means(self, *, language_model: bool = False) -> dict[str, float]:
        """The window's means; a language model's are its loss and exact NLL (it has no KL)."""
        means = {key: round_figure(value / self.sums["steps"]) for key, value in self.sums.items() if key != "steps"}
        return {"loss": means["loss"], "nll": means["rec"]} if language_model else means


def read_metrics(path: Path, up_to_step: int) -> list[str]:
    """The metric lines a checkpoint at ``up_to_step`` had seen; later ones are recomputed."""
    if not path.is_file():
        return []
    return [line for line, record in read_metric_records(path) if record["step"] <= up_to_step]


class NoMetrics:
    """The metrics log of a rank other than 0, which writes nothing."""

    def write(self, record: dict[str, Any]) -> None:
        pass


class MetricsLog:
    """``metrics.jsonl``, rewritten at the start with the lines kept from before (a resumed run)
    and appended to one record a line."""

    def __init__(self, path: Path, lines: list[str]) -> None:
        self.path = path
        atomic_write_text(path, "".join(line + "\n" for line in lines))

    def write(self, record: dict[str, Any]) -> None:
        try:
            with open(self.path, "a", encoding="utf-8") as handle:
                handle.write(json.dumps(record) + "\n")
        except OSError as error:  # a torn last line, if any, is dropped when the run resumes
            raise cannot_write(self.path, error, kept="the lines before this record are kept") from None


def progress_figures(terms: LossTerms, beta: float, extra: dict[str, float], *, language_model: bool) -> dict[str, str]:
    """The progress bar's figures for a step."""
    if language_model:
        return {"nll": f"{terms.reconstruction:.2f}"}
    shown = {"loss": f"{terms.loss:.2f}", "rec": f"{terms.reconstruction:.2f}", "kl": f"{terms.kl:.2f}", "beta": f"{beta:.3f}"}
    if "inner_steps" in extra:
        shown["inner"] = str(extra["inner_steps"])
    if terms.multiplier is not None:
        shown["lambda"] = f"{terms.multiplier:.3f}"
    return shown


def summary(valid: dict[str, Any]) -> str:
    """One line of the validation figures that are there (a language model has no z measures)."""
    shown = [("rec", ".3f"), ("kl", ".3f"), ("elbo", ".3f"), ("ppl_elbo", ".2f"), ("nll", ".3f"), ("ppl", ".2f"),
             ("mi", ".2f"), ("active_units", "d"), ("bleu", ".1f")]
    names = {"active_units": "au"}
    return " ".join(f"{names.get(key, key)} {valid[key]:{spec}}" for key, spec in shown if valid.get(key) is not None)

"""Attribute vectors (the notes, section 3.3) and how well they transfer on the embedded corpus.

An attribute vector is the mean posterior mean of sentences with an attribute minus that of
sentences without it (:meth:`seqvae.runs.Run.attribute_vector`); adding it to the code of another
sentence and decoding should change that attribute and keep the rest. On the embedded corpus the
attributes of any sentence can be read from its words (:func:`seqvae.data.synthetic.read_attributes`),
so the transfer can be scored: the share of transformed sentences whose attribute took the
intended value while every other attribute kept the value the original sentence had.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from seqvae.data.corpus import load_corpus
from seqvae.data.synthetic import ATTRIBUTES, read_attributes
from seqvae.errors import SeqVAEError


def transfer_rate(originals: list[str], transformed: list[str], attribute: str, target: str) -> float:
    """Share of ``transformed`` sentences whose ``attribute`` reads ``target`` while every other
    attribute reads as in the matching original (both read by ``read_attributes``)."""
    if len(originals) != len(transformed) or not originals:
        raise ValueError("transfer_rate needs as many transformed sentences as originals, and at least one")
    hits = 0
    for original, changed in zip(originals, transformed):
        before, after = read_attributes(original), read_attributes(changed)
        others_kept = all(after[name] == before[name] for name in ATTRIBUTES if name != attribute)
        hits += after[attribute] == target and others_kept
    return hits / len(originals)


def parse_attribute(text: str) -> tuple[str, str]:
    """``name=value`` of the embedded corpus, checked: e.g. ``tense=future``."""
    name, _, value = text.partition("=")
    if name not in ATTRIBUTES or value not in ATTRIBUTES.get(name, ()):
        choices = "; ".join(f"{key}={'|'.join(values)}" for key, values in ATTRIBUTES.items())
        raise SeqVAEError(f"attribute '{text}': choose name=value from the embedded corpus's {choices}")
    return name, value


@dataclass
class Transfer:
    """What an attribute vector did to a set of sentences."""

    attribute: str
    target: str
    scale: float
    originals: list[str]
    transformed: list[str]
    unchanged: list[str]
    rate: float | None = None
    baseline_rate: float | None = None
    vector_norm: float = 0.0
    sets: dict[str, int] = field(default_factory=dict)


def transfer(
    run,
    attribute: str,
    target: str,
    *,
    with_attribute: list[str] | None = None,
    without_attribute: list[str] | None = None,
    apply_to: list[str] | None = None,
    scale: float = 1.0,
    limit: int = 500,
    decoding=None,
) -> Transfer:
    """Build the vector of ``attribute = target`` and apply it, scoring the transfer against the
    decodes of the unchanged codes (the posterior means, same decoding).

    Sets not given come from the run's own labelled embedded corpus: sentences of the training
    split with the attribute at ``target`` (with) and at any other value (without), and the first
    ``limit`` validation sentences whose attribute is not ``target`` (apply)."""
    # The transfer rate reads attributes with the embedded grammar's reader: it means something
    # only for a run trained on the embedded corpus (whose files come with their labels).
    corpus = load_corpus(run.config.data)
    train, valid = corpus.splits["train"], corpus.splits["valid"]
    train_labels, valid_labels = run.labels("train", len(train)), run.labels("valid", len(valid))
    if train_labels is None or valid_labels is None:
        raise SeqVAEError(
            f"{run.run_dir}: was not trained on the embedded corpus (no train/valid .labels.jsonl beside its "
            "data files), so --attribute cannot score a transfer; use --with, --without and --apply without --attribute"
        )
    if with_attribute is None or without_attribute is None or apply_to is None:
        if with_attribute is None:
            with_attribute = [s for s, labels in zip(train, train_labels) if labels[attribute] == target]
        if without_attribute is None:
            without_attribute = [s for s, labels in zip(train, train_labels) if labels[attribute] != target]
        if apply_to is None:
            apply_to = [s for s, labels in zip(valid, valid_labels) if labels[attribute] != target][:limit]
    if not apply_to:
        raise SeqVAEError("no sentence to apply the attribute vector to")
    vector = run.attribute_vector(with_attribute, without_attribute)
    transformed = run.apply_attribute(apply_to, vector, scale=scale, decoding=decoding)
    unchanged = run.apply_attribute(apply_to, vector, scale=0.0, decoding=decoding)
    return Transfer(
        attribute=attribute,
        target=target,
        scale=scale,
        originals=apply_to,
        transformed=transformed,
        unchanged=unchanged,
        rate=transfer_rate(apply_to, transformed, attribute, target),
        baseline_rate=transfer_rate(apply_to, unchanged, attribute, target),
        vector_norm=float(vector.norm()),
        sets={"with": len(with_attribute), "without": len(without_attribute), "apply": len(apply_to)},
    )

"""Attribute vectors (the notes, section 3.3) and how well they transfer on the embedded corpus.

An attribute vector is the mean posterior mean of sentences with an attribute minus that of
sentences without it (:meth:`seqvae.runs.Run.attribute_vector`); adding it to the code of another
sentence and decoding should change that attribute and keep the rest. On the embedded corpus the
attributes of any sentence can be read from its words (:func:`seqvae.data.synthetic.read_attributes`),
so an edit can be judged on three things, each against the sentence it was applied to: the
transfer (:func:`attribute_rate`: the attribute took the intended value), the rest kept
(:func:`others_kept`: the share of the other four attributes that read as before) and the
content kept (BLEU to the input, which is measured on any corpus). :func:`transfer_rate` asks all
at once of each sentence: the intended value and every other attribute as before.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from seqvae.data.corpus import load_corpus
from seqvae.data.preparation import max_tokens
from seqvae.data.synthetic import ATTRIBUTES, counterparts, generate_sentences, read_attributes, split_seed
from seqvae.errors import SeqVAEError
from seqvae.measures import corpus_bleu

SEEDS_SEARCHED = 100
"""Corpus seeds :func:`perfect_edits` recognises (the quickstart's is 0, ``seqvae corpus``'s default 0)."""


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


def attribute_rate(transformed: list[str], attribute: str, target: str) -> float:
    """Share of ``transformed`` sentences whose ``attribute`` reads ``target``, whatever else changed."""
    return sum(read_attributes(sentence)[attribute] == target for sentence in transformed) / len(transformed)


def others_kept(originals: list[str], transformed: list[str], attribute: str) -> float:
    """Share of the other attributes, over every sentence and each attribute but ``attribute``,
    that read in the transformed sentence as in its original."""
    kept = total = 0
    for original, changed in zip(originals, transformed, strict=True):
        before, after = read_attributes(original), read_attributes(changed)
        for name in ATTRIBUTES:
            if name != attribute:
                kept += after[name] == before[name]
                total += 1
    return kept / total


def parse_attribute(text: str) -> tuple[str, str]:
    """``name=value`` of the embedded corpus, checked: e.g. ``tense=future``."""
    name, _, value = text.partition("=")
    if name not in ATTRIBUTES or value not in ATTRIBUTES.get(name, ()):
        choices = "; ".join(f"{key}={'|'.join(values)}" for key, values in ATTRIBUTES.items())
        raise SeqVAEError(f"attribute '{text}': choose name=value from the embedded corpus's {choices}")
    return name, value


@dataclass
class Transfer:
    """What an attribute vector did to a set of sentences, at one or more scales, beside the
    baseline: the same sentences' unchanged codes (posterior means) decoded the same way."""

    scales: tuple[float, ...]
    originals: list[str]
    unchanged: list[str]
    outputs: dict[float, list[str]]
    vector_norm: float
    relative_norm: float
    """The vector's norm over the root-mean-square distance of the with/without codes from their
    mean: about 1 moves a code as far as sentences lie apart."""
    sets: dict[str, int] = field(default_factory=dict)
    attribute: str | None = None
    target: str | None = None
    rates: dict[float, float] = field(default_factory=dict)
    """Embedded corpus: the transfer rate at each scale."""
    baseline_rate: float | None = None
    """Embedded corpus: the transfer rate of the unchanged codes' decodes."""
    changes: dict[float, dict[str, float]] = field(default_factory=dict)
    """Embedded corpus: at each scale, for each attribute, the share of sentences whose reading
    differs from the unchanged codes' decode (the target attribute should change, the others not)."""
    bleu_to_input: dict[float, float] = field(default_factory=dict)
    """At each scale, corpus BLEU of the decodes against the sentences they were applied to (in
    the tokenizer's form): how much of the input an edit keeps."""
    baseline_bleu_to_input: float | None = None
    """The same for the unchanged codes' decodes: the reconstruction BLEU of these sentences."""
    attribute_rates: dict[float, float] = field(default_factory=dict)
    """Embedded corpus: at each scale, the share of decodes whose attribute reads the target."""
    others_kept: dict[float, float] = field(default_factory=dict)
    """Embedded corpus: at each scale, the share of the other attributes that read as in the input."""
    baseline_attribute_rate: float | None = None
    baseline_others_kept: float | None = None
    lm_forward_ppl: dict[float, float] = field(default_factory=dict)
    """With a judge (:func:`judge_edits`): at each scale, the judge's forward perplexity of the decodes."""
    baseline_lm_forward_ppl: float | None = None
    """The same for the unchanged codes' decodes."""
    inputs_lm_forward_ppl: float | None = None
    """The same for the input sentences: the fluency an edit should keep."""
    perfect_bleu_to_input: float | None = None
    """Embedded corpus as written (:func:`perfect_edits`), tense edits: BLEU to the input of the perfect edits
    (each sentence generated again with the target value and every other choice the same), the
    ceiling of ``bleu_to_input``."""

    @property
    def transformed(self) -> list[str]:
        """The decodes at the first scale."""
        return self.outputs[self.scales[0]]

    @property
    def rate(self) -> float | None:
        """The transfer rate at the first scale (embedded corpus)."""
        return self.rates.get(self.scales[0])


def apply_vector(
    run,
    with_attribute: list[str],
    without_attribute: list[str],
    apply_to: list[str],
    *,
    scales: tuple[float, ...] = (1.0,),
    decoding=None,
    cache: bool = False,
    progress: bool = False,
) -> Transfer:
    """The attribute vector of ``with_attribute`` against ``without_attribute`` (the notes,
    section 3.3) added at each of ``scales`` to the codes of ``apply_to``, decoded, beside the
    unchanged codes decoded the same way. ``cache`` keeps the two sets' codes with the run."""
    if not with_attribute or not without_attribute:
        raise SeqVAEError("an attribute vector needs sentences with the attribute and sentences without it")
    if not apply_to:
        raise SeqVAEError("no sentence to apply the attribute vector to")
    if not scales:
        raise SeqVAEError("give at least one scale")
    with_codes = run.posterior_means(with_attribute, cache=cache, progress=progress)
    without_codes = run.posterior_means(without_attribute, cache=cache, progress=progress)
    vector = with_codes.mean(0) - without_codes.mean(0)
    codes = torch.cat([with_codes, without_codes])
    spread = float(((codes - codes.mean(0)) ** 2).sum(1).mean().sqrt())
    means = run.posterior_means(apply_to)
    outputs = {scale: run.decode(means + scale * vector, decoding=decoding) for scale in scales}
    norm = float(vector.norm())
    unchanged = run.decode(means, decoding=decoding)
    limit = max_tokens(run.config)
    inputs = [run.tokenizer.decode(run.tokenizer.encode(sentence)[: limit or None]) for sentence in apply_to]
    return Transfer(
        scales=tuple(scales),
        originals=apply_to,
        unchanged=unchanged,
        outputs=outputs,
        vector_norm=norm,
        relative_norm=norm / spread if spread > 0 else float("inf"),
        sets={"with": len(with_attribute), "without": len(without_attribute), "apply": len(apply_to)},
        bleu_to_input={scale: corpus_bleu(decoded, inputs) for scale, decoded in outputs.items()},
        baseline_bleu_to_input=corpus_bleu(unchanged, inputs),
    )


def judge_edits(result: Transfer, judge) -> Transfer:
    """Add the fluency of an edit as an independent language model reads it (``judge``, from
    :func:`seqvae.judge.load_judge`): the forward perplexity of the decodes at each scale, of the
    unchanged codes' decodes and of the inputs themselves (docs/measures.md, judged measures)."""
    from seqvae.judge import forward_perplexity

    result.lm_forward_ppl = {scale: forward_perplexity(judge, decoded) for scale, decoded in result.outputs.items()}
    result.baseline_lm_forward_ppl = forward_perplexity(judge, result.unchanged)
    result.inputs_lm_forward_ppl = forward_perplexity(judge, result.originals)
    return result


def attribute_changes(reference: list[str], decoded: list[str]) -> dict[str, float]:
    """For each attribute of the embedded corpus, the share of ``decoded`` sentences whose reading
    differs from that of the matching ``reference`` sentence."""
    before = [read_attributes(sentence) for sentence in reference]
    after = [read_attributes(sentence) for sentence in decoded]
    return {name: sum(a[name] != b[name] for a, b in zip(after, before)) / len(before) for name in ATTRIBUTES}


def perfect_edits(valid: list[str], attribute: str, target: str) -> dict[str, str] | None:
    """Each sentence of an embedded corpus's validation split mapped to its perfect edit
    (:func:`seqvae.data.synthetic.counterparts`), when ``valid`` is that split as
    :func:`~seqvae.data.synthetic.write_corpus` wrote it with a corpus seed below ``SEEDS_SEARCHED``
    (found by its first sentence); None for any other text, or an attribute without exact counterparts."""
    if not valid:
        return None
    for seed in range(SEEDS_SEARCHED):
        if generate_sentences(1, seed=split_seed(seed, "valid"))[0].text == valid[0]:
            break
    else:
        return None
    try:
        pairs = counterparts(len(valid), seed=split_seed(seed, "valid"), attribute=attribute, value=target)
    except ValueError:
        return None
    if [sentence.text for sentence, _ in pairs] != valid:
        return None
    return {sentence.text: edited for sentence, edited in pairs}


def transfer(
    run,
    attribute: str,
    target: str,
    *,
    with_attribute: list[str] | None = None,
    without_attribute: list[str] | None = None,
    apply_to: list[str] | None = None,
    scales: tuple[float, ...] = (1.0,),
    limit: int = 500,
    decoding=None,
    cache: bool = False,
    progress: bool = False,
) -> Transfer:
    """Build the vector of ``attribute = target`` and apply it, scoring the transfer at each scale
    against the decodes of the unchanged codes (the posterior means, same decoding).

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
    if with_attribute is None:
        with_attribute = [s for s, labels in zip(train, train_labels) if labels[attribute] == target]
    if without_attribute is None:
        without_attribute = [s for s, labels in zip(train, train_labels) if labels[attribute] != target]
    if apply_to is None:
        apply_to = [s for s, labels in zip(valid, valid_labels) if labels[attribute] != target][:limit]
    result = apply_vector(
        run, with_attribute, without_attribute, apply_to, scales=scales, decoding=decoding, cache=cache, progress=progress
    )
    result.attribute, result.target = attribute, target
    perfect = perfect_edits(valid, attribute, target)
    if perfect is not None and all(sentence in perfect for sentence in apply_to):
        result.perfect_bleu_to_input = corpus_bleu([perfect[sentence] for sentence in apply_to], apply_to)
    result.baseline_rate = transfer_rate(apply_to, result.unchanged, attribute, target)
    result.baseline_attribute_rate = attribute_rate(result.unchanged, attribute, target)
    result.baseline_others_kept = others_kept(apply_to, result.unchanged, attribute)
    for scale, decoded in result.outputs.items():
        result.rates[scale] = transfer_rate(apply_to, decoded, attribute, target)
        result.changes[scale] = attribute_changes(result.unchanged, decoded)
        result.attribute_rates[scale] = attribute_rate(decoded, attribute, target)
        result.others_kept[scale] = others_kept(apply_to, decoded, attribute)
    return result

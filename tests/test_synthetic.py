"""Tests for the embedded default corpus generator, seqvae.data.synthetic."""

from __future__ import annotations

import collections
import dataclasses
import hashlib
import itertools
import json
import os
import pathlib
import statistics
import subprocess
import sys

import pytest

from seqvae.data import synthetic
from seqvae.data.synthetic import (
    ATTRIBUTES,
    DEFAULT_SIZES,
    LabelledSentence,
    generate_sentences,
    read_labels,
    write_corpus,
)

REPO_ROOT = pathlib.Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def sample() -> list[LabelledSentence]:
    return generate_sentences(5000, seed=123)


def _by_value(sentences, attribute, value):
    return [s for s in sentences if s.attributes[attribute] == value]


def _fingerprint(sentences) -> str:
    payload = "\n".join(s.text + "\t" + json.dumps(s.attributes, sort_keys=True)
                        for s in sentences)
    return hashlib.sha256(payload.encode("utf-8")).hexdigest()


# --- API shape --------------------------------------------------------------------------------

def test_attribute_names_and_values():
    assert ATTRIBUTES == {
        "topic": ("food", "sports", "weather", "music", "travel"),
        "sentiment": ("positive", "negative"),
        "tense": ("past", "present", "future"),
        "number": ("singular", "plural"),
        "length": ("short", "long"),
    }
    assert DEFAULT_SIZES == {"train": 10000, "valid": 1000, "test": 1000}


def test_labels_have_exactly_the_attribute_keys_and_valid_values(sample):
    for sentence in sample:
        assert list(sentence.attributes) == list(ATTRIBUTES)
        for name, value in sentence.attributes.items():
            assert value in ATTRIBUTES[name]


def test_labelled_sentence_is_frozen():
    sentence = generate_sentences(1, seed=0)[0]
    with pytest.raises(dataclasses.FrozenInstanceError):
        sentence.text = "changed ."


def test_count_is_respected_and_negative_count_rejected():
    assert generate_sentences(0, seed=0) == []
    assert len(generate_sentences(37, seed=0)) == 37
    with pytest.raises(ValueError):
        generate_sentences(-1, seed=0)


# --- determinism ------------------------------------------------------------------------------

def test_same_seed_gives_identical_output():
    assert generate_sentences(300, seed=7) == generate_sentences(300, seed=7)


def test_prefix_property_and_different_seeds_differ():
    assert generate_sentences(300, seed=7)[:100] == generate_sentences(100, seed=7)
    first = [s.text for s in generate_sentences(300, seed=7)]
    second = [s.text for s in generate_sentences(300, seed=8)]
    assert first != second
    assert sum(a != b for a, b in zip(first, second)) > 250


def test_global_random_state_is_untouched_and_irrelevant():
    import random

    random.seed(1)
    state = random.getstate()
    first = generate_sentences(50, seed=3)
    assert random.getstate() == state
    random.seed(999)
    assert generate_sentences(50, seed=3) == first


def test_output_identical_across_processes():
    expected = _fingerprint(generate_sentences(500, seed=42))
    code = ("import hashlib, json\n"
            "from seqvae.data.synthetic import generate_sentences\n"
            "s = generate_sentences(500, seed=42)\n"
            "p = '\\n'.join(x.text + '\\t' + json.dumps(x.attributes, sort_keys=True) for x in s)\n"
            "print(hashlib.sha256(p.encode('utf-8')).hexdigest())\n")
    for hash_seed in ("1", "2"):
        python_path = os.pathsep.join(filter(None, [str(REPO_ROOT),
                                                    os.environ.get("PYTHONPATH")]))
        environment = dict(os.environ, PYTHONHASHSEED=hash_seed, PYTHONPATH=python_path)
        result = subprocess.run([sys.executable, "-c", code], cwd=REPO_ROOT, env=environment,
                                capture_output=True, text=True, check=True, timeout=60)
        assert result.stdout.strip() == expected


# --- write_corpus / read_labels ---------------------------------------------------------------

def test_write_corpus_writes_matching_files(tmp_path):
    directory = tmp_path / "nested" / "corpus"
    sizes = {"train": 120, "valid": 30, "test": 20}
    paths = write_corpus(directory, seed=5, sizes=sizes)
    assert set(paths) == set(sizes)
    contents = {}
    for split, count in sizes.items():
        text_path = paths[split]
        assert text_path == directory / f"{split}.txt"
        raw = text_path.read_bytes().decode("utf-8")
        assert raw.endswith(" .\n")
        lines = raw.splitlines()
        assert len(lines) == count
        label_path = directory / f"{split}.labels.jsonl"
        labels = read_labels(label_path)
        assert len(labels) == count
        assert len(label_path.read_text(encoding="utf-8").splitlines()) == count
        assert all(list(label) == list(ATTRIBUTES) for label in labels)
        contents[split] = lines
    # Each split comes from its own derived seed.
    assert contents["train"][:20] != contents["valid"][:20]
    assert contents["valid"][:20] != contents["test"]


def test_write_corpus_labels_match_sentences(tmp_path):
    paths = write_corpus(tmp_path, seed=2, sizes={"train": 400})
    lines = paths["train"].read_text(encoding="utf-8").splitlines()
    labels = read_labels(tmp_path / "train.labels.jsonl")
    for text, label in zip(lines, labels):
        assert ("will" in text.split()) == (label["tense"] == "future")
        assert ("," in text.split()) == (label["length"] == "long")


def test_write_corpus_is_deterministic_and_seed_dependent(tmp_path):
    sizes = {"train": 50, "valid": 10}
    write_corpus(tmp_path / "a", seed=3, sizes=sizes)
    write_corpus(tmp_path / "b", seed=3, sizes=sizes)
    write_corpus(tmp_path / "c", seed=4, sizes=sizes)
    for name in ("train.txt", "train.labels.jsonl", "valid.txt", "valid.labels.jsonl"):
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes()
    train_a = (tmp_path / "a" / "train.txt").read_bytes()
    assert train_a != (tmp_path / "c" / "train.txt").read_bytes()


def test_write_corpus_default_sizes(tmp_path):
    paths = write_corpus(tmp_path)
    for split, count in DEFAULT_SIZES.items():
        assert len(paths[split].read_text(encoding="utf-8").splitlines()) == count
        assert len(read_labels(tmp_path / f"{split}.labels.jsonl")) == count


@pytest.mark.parametrize("bad_count", [0, -3])
def test_write_corpus_rejects_non_positive_count(tmp_path, bad_count):
    with pytest.raises(ValueError):
        write_corpus(tmp_path / "out", sizes={"train": 10, "valid": bad_count})


# --- distribution of attributes ---------------------------------------------------------------

def test_each_attribute_value_roughly_uniform(sample):
    for name, values in ATTRIBUTES.items():
        counts = collections.Counter(s.attributes[name] for s in sample)
        expected = len(sample) / len(values)
        for value in values:
            assert abs(counts[value] - expected) < 0.2 * expected, (name, value, counts)


def test_attributes_are_independent():
    sentences = generate_sentences(2000, seed=11)
    for first, second in itertools.combinations(ATTRIBUTES, 2):
        cells = collections.Counter((s.attributes[first], s.attributes[second])
                                    for s in sentences)
        expected = len(sentences) / (len(ATTRIBUTES[first]) * len(ATTRIBUTES[second]))
        for pair in itertools.product(ATTRIBUTES[first], ATTRIBUTES[second]):
            assert abs(cells[pair] - expected) < 0.4 * expected, (first, second, pair, cells)


# --- surface form -----------------------------------------------------------------------------

def test_surface_format(sample):
    for sentence in sample:
        text = sentence.text
        assert text == text.lower()
        assert text.endswith(" .")
        assert text == text.strip()
        assert "  " not in text
        tokens = text.split(" ")
        assert tokens.count(".") == 1
        for token in tokens:
            assert token in {",", "."} or token.isalpha(), token


def test_many_distinct_sentences():
    texts = [s.text for s in generate_sentences(2000, seed=9)]
    assert len(set(texts)) > 0.9 * len(texts)


def test_indefinite_article_matches_next_word(sample):
    seen = collections.Counter()
    for sentence in sample:
        tokens = sentence.text.split()
        for token, following in zip(tokens, tokens[1:]):
            if token == "a":
                assert following[0] not in "aeiou", sentence.text
                seen["a"] += 1
            elif token == "an":
                assert following[0] in "aeiou", sentence.text
                seen["an"] += 1
    assert seen["a"] > 0 and seen["an"] > 0


def test_vocabulary_is_small_but_varied(sample):
    vocabulary = {token for s in sample for token in s.text.split()}
    assert 150 <= len(vocabulary) <= 600


# --- attributes visible in the words ----------------------------------------------------------

def test_will_appears_exactly_in_future_sentences(sample):
    for sentence in sample:
        assert ("will" in sentence.text.split()) == (sentence.attributes["tense"] == "future")


def test_main_verb_form_marks_tense_and_number(sample):
    past_forms = {past for verbs in synthetic.VERBS.values() for _, _, past in verbs}
    third_person_forms = {third for verbs in synthetic.VERBS.values() for _, third, _ in verbs}
    base_forms = {base for verbs in synthetic.VERBS.values() for base, _, _ in verbs}
    assert not past_forms & (third_person_forms | base_forms)
    assert not third_person_forms & base_forms
    for sentence in sample:
        verb_tokens = sentence.text.split()[2:4]
        tense, number = sentence.attributes["tense"], sentence.attributes["number"]
        if tense == "past":
            assert verb_tokens[0] in past_forms, sentence.text
        elif tense == "future":
            assert verb_tokens[0] == "will" and verb_tokens[1] in base_forms, sentence.text
        elif number == "singular":
            assert verb_tokens[0] in third_person_forms, sentence.text
        else:
            assert verb_tokens[0] in base_forms, sentence.text


def test_number_agreement(sample):
    singular_subjects = {s for pairs in synthetic.SUBJECTS.values() for s, _ in pairs}
    plural_subjects = {p for pairs in synthetic.SUBJECTS.values() for _, p in pairs}
    assert not singular_subjects & plural_subjects
    for sentence in sample:
        tokens = sentence.text.split()
        singular = sentence.attributes["number"] == "singular"
        if singular:
            assert tokens[0] in {"the", "a", "an", "this", "that", "our"}, sentence.text
            assert tokens[1] in singular_subjects, sentence.text
        else:
            assert tokens[0] in {"the", "some", "these", "those", "our"}, sentence.text
            assert tokens[1] in plural_subjects, sentence.text
        if sentence.attributes["length"] == "long":
            clause = tokens[tokens.index(","):]
            assert clause[1] == "and"
            assert (clause[2] in {"he", "she"}) == singular, sentence.text
            assert (clause[2] == "they") == (not singular), sentence.text
            wrong_be = {"were", "are"} if singular else {"was", "is"}
            assert not wrong_be & set(clause), sentence.text


def test_spot_check_agreement_examples():
    # Hand-picked checks on the inflection helpers.
    verb = ("cook", "cooks", "cooked")
    assert synthetic._conjugate(verb, "present", "singular") == ["cooks"]
    assert synthetic._conjugate(verb, "present", "plural") == ["cook"]
    assert synthetic._conjugate(verb, "past", "plural") == ["cooked"]
    assert synthetic._conjugate(verb, "future", "singular") == ["will", "cook"]
    assert synthetic._with_determiner("a", ["exciting", "match"]) == ["an", "exciting", "match"]
    assert synthetic._with_determiner("a", ["really", "awful", "stew"])[0] == "a"


@pytest.mark.parametrize("attribute", ["topic", "sentiment", "number"])
def test_every_sentence_has_a_word_exclusive_to_its_value(sample, attribute):
    """Each sentence contains a token that never occurs with any other value of the attribute."""
    values_of_token = collections.defaultdict(set)
    for sentence in sample:
        for token in set(sentence.text.split()):
            values_of_token[token].add(sentence.attributes[attribute])
    for sentence in sample:
        value = sentence.attributes[attribute]
        assert any(values_of_token[token] == {value} for token in sentence.text.split()), \
            (attribute, sentence.text)


def test_length_invariant(sample):
    short_lengths, long_lengths = [], []
    for sentence in sample:
        tokens = sentence.text.split()
        if sentence.attributes["length"] == "short":
            assert 7 <= len(tokens) <= 9, sentence.text
            assert "," not in tokens
            short_lengths.append(len(tokens))
        else:
            assert 13 <= len(tokens) <= 22, sentence.text
            assert tokens.count(",") == 1
            long_lengths.append(len(tokens))
    assert min(long_lengths) > max(short_lengths)
    assert statistics.median(long_lengths) >= 15


def test_read_attributes_recovers_every_generated_label_and_judges_transfers():
    from seqvae.attributes import transfer_rate
    from seqvae.data.synthetic import read_attributes

    sentences = generate_sentences(3000, seed=11)
    assert all(read_attributes(s.text) == s.attributes for s in sentences)
    assert read_attributes("the the the .") == {
        "topic": None, "sentiment": None, "tense": None, "number": None, "length": "short"
    }
    original = "the chef cooked a tasty soup ."
    assert transfer_rate([original] * 3, [
        "the chef will cook a tasty soup .",    # tense changed, the rest kept: a hit
        "the chefs will cook a tasty soup .",   # tense changed but number too: a miss
        "the chef cooked a tasty soup .",       # nothing changed: a miss
    ], "tense", "future") == pytest.approx(1 / 3)


def test_counterparts_change_the_tense_alone_and_are_the_ceiling_of_an_edits_bleu():
    from seqvae.measures import corpus_bleu

    pairs = synthetic.counterparts(400, seed=3, attribute="tense", value="future")
    assert [sentence for sentence, _ in pairs] == synthetic.generate_sentences(400, seed=3)
    for sentence, edited in pairs:
        before, after = synthetic.read_attributes(sentence.text), synthetic.read_attributes(edited)
        assert after == {**before, "tense": "future"}
        if sentence.attributes["tense"] == "future":
            assert edited == sentence.text
        else:  # only the tensed words differ: the verb, the time phrase, the follow-up's verb
            assert edited != sentence.text and edited.split()[:2] == sentence.text.split()[:2]
    changed = [(sentence.text, edited) for sentence, edited in pairs if sentence.attributes["tense"] != "future"]
    assert 30 < corpus_bleu([e for _, e in changed], [s for s, _ in changed]) < 70
    with pytest.raises(ValueError, match="tomorrow"):
        synthetic.counterparts(10, seed=3, attribute="tense", value="tomorrow")
    with pytest.raises(ValueError, match="changes the random draws"):  # topics' word lists differ in length
        synthetic.counterparts(400, seed=3, attribute="topic", value=synthetic.ATTRIBUTES["topic"][0])

"""Generate the embedded default corpus: grammar-built English sentences with known attributes.

Every sentence is produced from a small hand-written grammar after sampling five latent
attributes (topic, sentiment, tense, number, length) uniformly and independently. Each
attribute is marked by its own words, so the labels can serve as ground truth for
latent-space probes and attribute-vector transfer:

* topic      -- the subject noun, verb, object noun, topic adjectives and place phrase;
* sentiment  -- the evaluative adjective on the object (plus, in long sentences, a feeling
  or an opinion clause);
* tense      -- the verb form ("cooked" / "cooks" / "will cook"), and in long sentences a
  tense-specific time phrase and a tensed follow-up clause;
* number     -- the subject determiner and noun ("this chef" / "these chefs"), verb
  agreement in the present tense and the pronoun of the follow-up clause ("she" / "they");
* length     -- short sentences are a single clause of 7 to 9 tokens with no comma; long
  sentences add one or two modifier phrases (place, time) and a ", and ..." clause, giving
  13 to 22 tokens.

Output is lower-case, tokens are separated by single spaces, punctuation ("," and ".") is
tokenised separately and every sentence ends with " .". Only ``random.Random(seed)`` is used,
so the output depends on the arguments alone, in any Python process.
"""

from __future__ import annotations

import hashlib
import json
import os
import pathlib
import random
from dataclasses import dataclass

ATTRIBUTES: dict[str, tuple[str, ...]] = {
    "topic": ("food", "sports", "weather", "music", "travel"),
    "sentiment": ("positive", "negative"),
    "tense": ("past", "present", "future"),
    "number": ("singular", "plural"),
    "length": ("short", "long"),
}

DEFAULT_SIZES: dict[str, int] = {"train": 10000, "valid": 1000, "test": 1000}

# A verb is (base form, third-person singular present, past form).
Verb = tuple[str, str, str]

# Subjects are people, so the follow-up clause can refer to them as "he", "she" or "they".
# Each entry is (singular, plural).
SUBJECTS: dict[str, tuple[tuple[str, str], ...]] = {
    "food": (("chef", "chefs"), ("baker", "bakers"), ("waiter", "waiters"),
             ("caterer", "caterers"), ("host", "hosts"), ("diner", "diners")),
    "sports": (("player", "players"), ("coach", "coaches"), ("athlete", "athletes"),
               ("runner", "runners"), ("captain", "captains"), ("swimmer", "swimmers")),
    "weather": (("farmer", "farmers"), ("sailor", "sailors"), ("forecaster", "forecasters"),
                ("gardener", "gardeners"), ("villager", "villagers"), ("ranger", "rangers")),
    "music": (("singer", "singers"), ("pianist", "pianists"), ("drummer", "drummers"),
              ("guitarist", "guitarists"), ("composer", "composers"),
              ("violinist", "violinists")),
    "travel": (("tourist", "tourists"), ("traveller", "travellers"), ("guide", "guides"),
               ("passenger", "passengers"), ("explorer", "explorers"),
               ("backpacker", "backpackers")),
}

VERBS: dict[str, tuple[Verb, ...]] = {
    "food": (("cook", "cooks", "cooked"), ("make", "makes", "made"),
             ("serve", "serves", "served"), ("prepare", "prepares", "prepared"),
             ("taste", "tastes", "tasted"), ("order", "orders", "ordered")),
    "sports": (("play", "plays", "played"), ("win", "wins", "won"),
               ("watch", "watches", "watched"), ("finish", "finishes", "finished"),
               ("join", "joins", "joined"), ("referee", "referees", "refereed")),
    "weather": (("expect", "expects", "expected"), ("predict", "predicts", "predicted"),
                ("spend", "spends", "spent"), ("have", "has", "had"),
                ("describe", "describes", "described"),
                ("announce", "announces", "announced")),
    "music": (("play", "plays", "played"), ("perform", "performs", "performed"),
              ("record", "records", "recorded"), ("sing", "sings", "sang"),
              ("write", "writes", "wrote"), ("rehearse", "rehearses", "rehearsed")),
    "travel": (("book", "books", "booked"), ("plan", "plans", "planned"),
               ("take", "takes", "took"), ("begin", "begins", "began"),
               ("describe", "describes", "described"), ("arrange", "arranges", "arranged")),
}

OBJECTS: dict[str, tuple[str, ...]] = {
    "food": ("soup", "salad", "cake", "pie", "curry", "sandwich", "stew", "omelette",
             "pizza", "dessert"),
    "sports": ("match", "game", "race", "tournament", "final", "season", "contest",
               "event"),
    "weather": ("day", "morning", "afternoon", "evening", "week", "weekend", "spring",
                "autumn"),
    "music": ("song", "melody", "tune", "ballad", "anthem", "lullaby", "solo", "duet"),
    "travel": ("trip", "journey", "flight", "tour", "holiday", "cruise", "voyage",
               "excursion"),
}

PLACES: dict[str, tuple[str, ...]] = {
    "food": ("in the kitchen", "at the restaurant", "at the cafe", "at the market"),
    "sports": ("at the stadium", "in the arena", "on the field", "at the gym"),
    "weather": ("in the valley", "on the coast", "in the hills", "near the harbour"),
    "music": ("in the studio", "at the festival", "in the concert hall", "at the theatre"),
    "travel": ("at the airport", "at the station", "in the city", "abroad"),
}

# Evaluative adjectives: shared ones plus a few that also carry the topic.
GENERAL_ADJECTIVES: dict[str, tuple[str, ...]] = {
    "positive": ("wonderful", "excellent", "lovely", "great", "amazing", "brilliant"),
    "negative": ("terrible", "awful", "horrible", "dreadful", "poor", "disappointing"),
}

TOPIC_ADJECTIVES: dict[str, dict[str, tuple[str, ...]]] = {
    "food": {"positive": ("delicious", "tasty", "fresh"),
             "negative": ("bland", "stale", "greasy")},
    "sports": {"positive": ("exciting", "thrilling", "memorable"),
               "negative": ("dull", "boring", "sloppy")},
    "weather": {"positive": ("sunny", "bright", "mild"),
                "negative": ("stormy", "gloomy", "freezing")},
    "music": {"positive": ("beautiful", "catchy", "soothing"),
              "negative": ("tuneless", "noisy", "harsh")},
    "travel": {"positive": ("relaxing", "scenic", "unforgettable"),
               "negative": ("exhausting", "stressful", "uncomfortable")},
}

INTENSIFIERS: tuple[str, ...] = ("really", "truly")

FEELINGS: dict[str, tuple[str, ...]] = {
    "positive": ("happy", "proud", "pleased", "delighted", "thrilled", "cheerful"),
    "negative": ("unhappy", "disappointed", "upset", "annoyed", "frustrated", "ashamed"),
}

OPINION_VERBS: dict[str, tuple[Verb, ...]] = {
    "positive": (("love", "loves", "loved"), ("like", "likes", "liked"),
                 ("enjoy", "enjoys", "enjoyed"), ("praise", "praises", "praised")),
    "negative": (("hate", "hates", "hated"), ("dislike", "dislikes", "disliked"),
                 ("regret", "regrets", "regretted"), ("dread", "dreads", "dreaded")),
}

TIME_PHRASES: dict[str, tuple[str, ...]] = {
    "past": ("yesterday", "last week", "last night", "last summer", "last weekend"),
    "present": ("every day", "every week", "every weekend", "every morning",
                "most evenings"),
    "future": ("tomorrow", "next week", "next month", "next summer", "next weekend"),
}

SUBJECT_DETERMINERS: dict[str, tuple[str, ...]] = {
    "singular": ("the", "a", "this", "that", "our"),
    "plural": ("the", "some", "these", "those", "our"),
}

PRONOUNS: dict[str, tuple[str, ...]] = {
    "singular": ("he", "she"),
    "plural": ("they",),
}

# "be" in each tense, as (singular, plural).
BE_FORMS: dict[str, tuple[str, str]] = {
    "past": ("was", "were"),
    "present": ("is", "are"),
    "future": ("will be", "will be"),
}


@dataclass(frozen=True)
class LabelledSentence:
    """One generated sentence and the attribute values it was generated from."""

    text: str
    attributes: dict[str, str]


def generate_sentences(count: int, *, seed: int) -> list[LabelledSentence]:
    """Return ``count`` labelled sentences, a deterministic function of ``count`` and ``seed``.

    Each sentence's attributes are drawn uniformly and independently from ``ATTRIBUTES``.
    Raises ValueError if ``count`` is negative.
    """
    if count < 0:
        raise ValueError(f"sentence count must be non-negative, got {count}")
    rng = random.Random(seed)
    sentences = []
    for _ in range(count):
        attributes = {name: rng.choice(values) for name, values in ATTRIBUTES.items()}
        sentences.append(LabelledSentence(text=_build_sentence(rng, attributes),
                                          attributes=attributes))
    return sentences


def counterparts(count: int, *, seed: int, attribute: str, value: str) -> list[tuple[LabelledSentence, str]]:
    """The sentences of ``generate_sentences(count, seed=seed)``, each beside its perfect edit:
    the same sentence generated again from the same random state with ``attribute`` set to
    ``value`` and every other choice the same (a sentence that already has ``value`` is its own
    counterpart). This is the best any attribute edit can do, so the BLEU of the counterparts to
    their originals is the ceiling of an edit's BLEU to the input.

    Defined for an attribute whose value does not change how many random draws a sentence takes
    (tense: its time phrases come in lists of one length); raises ValueError where that fails.
    """
    if attribute not in ATTRIBUTES or value not in ATTRIBUTES[attribute]:
        raise ValueError(f"unknown attribute value {attribute}={value}")
    rng = random.Random(seed)
    pairs = []
    for _ in range(count):
        attributes = {name: rng.choice(values) for name, values in ATTRIBUTES.items()}
        state = rng.getstate()
        sentence = LabelledSentence(text=_build_sentence(rng, attributes), attributes=attributes)
        after = rng.getstate()
        rng.setstate(state)
        edited = _build_sentence(rng, {**attributes, attribute: value})
        if rng.getstate() != after:
            raise ValueError(f"{attribute}={value} changes the random draws of a sentence, so it has no exact counterpart")
        pairs.append((sentence, edited))
    return pairs


def write_corpus(directory: str | os.PathLike[str], *, seed: int = 0,
                 sizes: dict[str, int] | None = None) -> dict[str, pathlib.Path]:
    """Write ``{split}.txt`` and ``{split}.labels.jsonl`` for each split into ``directory``.

    ``sizes`` maps split name to sentence count (default ``DEFAULT_SIZES``). Each split is
    generated from its own seed derived from ``seed`` and the split name (stable across
    processes). The directory is created if needed. Returns ``{split: path to the .txt}``.
    Raises ValueError if any count is not positive.
    """
    sizes = dict(DEFAULT_SIZES if sizes is None else sizes)
    for split, count in sizes.items():
        if count <= 0:
            raise ValueError(f"split {split!r} must have a positive sentence count, got {count}")
    directory = pathlib.Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    paths = {}
    for split, count in sizes.items():
        sentences = generate_sentences(count, seed=split_seed(seed, split))
        text_path = directory / f"{split}.txt"
        labels_path = directory / f"{split}.labels.jsonl"
        text_path.write_text("".join(s.text + "\n" for s in sentences), encoding="utf-8")
        labels_path.write_text("".join(json.dumps(s.attributes) + "\n" for s in sentences),
                               encoding="utf-8")
        paths[split] = text_path
    return paths


def _subject_table() -> dict[str, tuple[str, str]]:
    table = {}
    for topic, pairs in SUBJECTS.items():
        for singular, plural in pairs:
            table[singular] = (topic, "singular")
            table[plural] = (topic, "plural")
    return table


def _adjective_table() -> dict[str, str]:
    table = {word: sentiment for sentiment, words in GENERAL_ADJECTIVES.items() for word in words}
    for by_sentiment in TOPIC_ADJECTIVES.values():
        table.update({word: sentiment for sentiment, words in by_sentiment.items() for word in words})
    return table


def read_attributes(sentence: str) -> dict[str, str | None]:
    """The attributes a sentence of this grammar expresses, read from its words alone (the inverse
    of the generator, for judging decoded sentences): topic and number from the subject noun,
    sentiment from the object's evaluative adjective, tense from the main verb, length from the
    ", and" clause. An attribute the words do not settle (a garbled decode) is None."""
    subjects, adjectives = _subject_table(), _adjective_table()
    words = sentence.split()
    found: dict[str, str | None] = dict.fromkeys(ATTRIBUTES)
    position = next((i for i, word in enumerate(words) if word in subjects), None)
    if position is not None:
        found["topic"], found["number"] = subjects[words[position]]
        verb = words[position + 1] if position + 1 < len(words) else ""
        pasts = {v[2] for verbs in VERBS.values() for v in verbs}
        presents = {form for verbs in VERBS.values() for v in verbs for form in v[:2]}
        if verb == "will":
            found["tense"] = "future"
        elif verb in pasts:
            found["tense"] = "past"
        elif verb in presents:
            found["tense"] = "present"
    sentiment = next((adjectives[word] for word in words if word in adjectives), None)
    found["sentiment"] = sentiment
    found["length"] = "long" if "," in words else "short"
    return found


def labels_path(text_path: str | os.PathLike[str]) -> pathlib.Path:
    """Where the labels of a text file live: ``valid.txt`` -> ``valid.labels.jsonl`` beside it."""
    path = pathlib.Path(text_path)
    return path.with_name(f"{path.stem if path.suffix == '.txt' else path.name}.labels.jsonl")


def read_labels(path: str | os.PathLike[str]) -> list[dict[str, str]]:
    """Read a ``.labels.jsonl`` file written by ``write_corpus``: one dict per non-blank line."""
    labels = []
    with open(path, encoding="utf-8") as handle:
        for line_number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            record = json.loads(line)
            if not isinstance(record, dict):
                raise ValueError(f"{path}:{line_number}: expected a JSON object")
            labels.append(record)
    return labels


def split_seed(seed: int, split: str) -> int:
    """Derive a split's seed from the corpus seed and the split name, without ``hash()``."""
    digest = hashlib.sha256(f"{seed}:{split}".encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big")


def _build_sentence(rng: random.Random, attributes: dict[str, str]) -> str:
    """Build one sentence realising ``attributes``; tokens joined by single spaces."""
    topic, tense = attributes["topic"], attributes["tense"]
    tokens = _main_clause(rng, attributes)
    if attributes["length"] == "long":
        modifiers = rng.choice((("place",), ("time",), ("place", "time")))
        if "place" in modifiers:
            tokens += rng.choice(PLACES[topic]).split()
        if "time" in modifiers:
            tokens += rng.choice(TIME_PHRASES[tense]).split()
        tokens += _follow_up_clause(rng, attributes)
    tokens.append(".")
    return " ".join(tokens)


def _main_clause(rng: random.Random, attributes: dict[str, str]) -> list[str]:
    """Return "determiner subject verb determiner [intensifier] adjective object"."""
    topic, number = attributes["topic"], attributes["number"]
    singular, plural = rng.choice(SUBJECTS[topic])
    subject = singular if number == "singular" else plural
    determiner = rng.choice(SUBJECT_DETERMINERS[number])
    verb = _conjugate(rng.choice(VERBS[topic]), attributes["tense"], number)
    adjective_pool = GENERAL_ADJECTIVES[attributes["sentiment"]] + \
        TOPIC_ADJECTIVES[topic][attributes["sentiment"]]
    object_phrase = [rng.choice(adjective_pool), rng.choice(OBJECTS[topic])]
    if rng.random() < 0.5:
        object_phrase.insert(0, rng.choice(INTENSIFIERS))
    object_determiner = rng.choice(("a", "the"))
    return (_with_determiner(determiner, [subject]) + verb
            + _with_determiner(object_determiner, object_phrase))


def _follow_up_clause(rng: random.Random, attributes: dict[str, str]) -> list[str]:
    """Return ", and <pronoun> ..." stating how the subject felt about it (sentiment)."""
    sentiment, tense, number = (attributes["sentiment"], attributes["tense"],
                                attributes["number"])
    tokens = [",", "and", rng.choice(PRONOUNS[number])]
    if rng.random() < 0.5:
        be_singular, be_plural = BE_FORMS[tense]
        tokens += (be_singular if number == "singular" else be_plural).split()
        if rng.random() < 0.5:
            tokens.append(rng.choice(INTENSIFIERS))
        tokens.append(rng.choice(FEELINGS[sentiment]))
    else:
        tokens += _conjugate(rng.choice(OPINION_VERBS[sentiment]), tense, number)
        tokens.append("it")
    return tokens


def _conjugate(verb: Verb, tense: str, number: str) -> list[str]:
    """Return the verb's tokens for ``tense`` with a subject of grammatical ``number``."""
    base, third_person, past = verb
    if tense == "past":
        return [past]
    if tense == "future":
        return ["will", base]
    return [third_person if number == "singular" else base]


def _with_determiner(determiner: str, phrase: list[str]) -> list[str]:
    """Prefix ``phrase`` with ``determiner``, turning "a" into "an" before a vowel letter."""
    if determiner == "a" and phrase[0][0] in "aeiou":
        determiner = "an"
    return [determiner, *phrase]

import pytest

from seqvae.data.tokenizers import (
    EOS_ID,
    UNK_ID,
    SentencePieceTokenizer,
    WordTokenizer,
    load_tokenizer,
)
from seqvae.errors import SeqVAEError


def _sentences(corpus):
    return corpus["train"].read_text(encoding="utf-8").splitlines()


def test_word_round_trip_and_specials(tiny_corpus, tmp_path):
    sentences = _sentences(tiny_corpus)
    tokenizer = WordTokenizer.build(sentences)
    assert tokenizer.tokens[:4] == ["<pad>", "<unk>", "<bos>", "<eos>"]
    for sentence in sentences[:50]:
        assert tokenizer.decode(tokenizer.encode(sentence)) == sentence
    tokenizer.save(tmp_path)
    loaded = load_tokenizer(tmp_path)
    assert loaded.tokens == tokenizer.tokens and loaded.fingerprint == tokenizer.fingerprint


def test_literal_unk_in_text_maps_to_the_unknown_token():
    tokenizer = WordTokenizer.build(["the <unk> sat on the mat", "a <unk> <eos>"])
    assert "<unk>" not in tokenizer.tokens[4:]
    ids = tokenizer.encode("the <unk> sat")
    assert ids[1] == UNK_ID
    assert tokenizer.encode("<eos>") == [UNK_ID]  # specials in text are words, never control ids
    assert tokenizer.encode("zebra") == [UNK_ID]


def test_min_frequency_and_max_size():
    sentences = ["a a a b b c", "a b d"]
    assert WordTokenizer.build(sentences, min_frequency=2).tokens[4:] == ["a", "b"]
    assert WordTokenizer.build(sentences, max_size=6).tokens[4:] == ["a", "b"]
    assert WordTokenizer.build(sentences).tokens[4:] == ["a", "b", "c", "d"]


@pytest.mark.parametrize("model_type", ["unigram", "bpe"])
def test_sentencepiece_round_trip(tiny_corpus, tmp_path, model_type):
    sentences = _sentences(tiny_corpus)
    tokenizer = SentencePieceTokenizer.train(sentences, vocab_size=120, model_type=model_type)
    assert tokenizer.vocab_size == 120
    assert tokenizer.processor.id_to_piece(UNK_ID) == "<unk>" and tokenizer.processor.id_to_piece(EOS_ID) == "<eos>"
    for sentence in sentences[:50]:
        ids = tokenizer.encode(sentence)
        assert UNK_ID not in ids
        assert tokenizer.decode(ids) == sentence
    tokenizer.save(tmp_path)
    loaded = load_tokenizer(tmp_path)
    assert loaded.fingerprint == tokenizer.fingerprint
    assert loaded.encode(sentences[0]) == tokenizer.encode(sentences[0])


def test_sentencepiece_maps_literal_unk(tiny_corpus):
    tokenizer = SentencePieceTokenizer.train(_sentences(tiny_corpus), vocab_size=100)
    ids = tokenizer.encode("the <unk> game")
    assert ids.count(UNK_ID) == 1
    assert tokenizer.decode(ids) == "the <unk> game"


def test_sentencepiece_vocab_too_large_is_a_one_line_error():
    with pytest.raises(SeqVAEError, match="tokenizer.vocab_size=5000"):
        SentencePieceTokenizer.train(["a b c", "b c d"], vocab_size=5000)


def test_corrupt_tokenizer_file_is_reported(tmp_path):
    (tmp_path / "tokenizer.json").write_text("{not json", encoding="utf-8")
    with pytest.raises(SeqVAEError, match="tokenizer.json"):
        load_tokenizer(tmp_path)


def test_sentencepiece_training_is_deterministic(tiny_corpus):
    sentences = _sentences(tiny_corpus)
    first = SentencePieceTokenizer.train(sentences, vocab_size=100, model_type="bpe")
    second = SentencePieceTokenizer.train(sentences, vocab_size=100, model_type="bpe")
    assert first.fingerprint == second.fingerprint


@pytest.mark.parametrize("model_type", ["unigram", "bpe"])
def test_sentencepiece_ids_are_ordered_by_training_frequency(tiny_corpus, model_type):
    from collections import Counter

    sentences = _sentences(tiny_corpus)
    tokenizer = SentencePieceTokenizer.train(sentences, vocab_size=120, model_type=model_type)
    counts = Counter(i for sentence in sentences for i in tokenizer.encode(sentence))
    ordinary = [counts[i] for i in range(4, tokenizer.vocab_size)]
    assert ordinary == sorted(ordinary, reverse=True) and ordinary[0] > ordinary[-1]
    # the renumbering is a real one: SentencePiece's own ids are not in frequency order here
    assert tokenizer.order != list(range(tokenizer.vocab_size))


def test_a_sentencepiece_run_saved_without_an_order_keeps_sentencepieces_ids(tiny_corpus, tmp_path):
    import json

    tokenizer = SentencePieceTokenizer.train(_sentences(tiny_corpus), vocab_size=100)
    tokenizer.save(tmp_path)
    spec = json.loads((tmp_path / "tokenizer.json").read_text())
    del spec["order"]  # as runs saved before the renumbering
    (tmp_path / "tokenizer.json").write_text(json.dumps(spec))
    old = load_tokenizer(tmp_path)
    sentence = _sentences(tiny_corpus)[0]
    assert old.encode(sentence) == tokenizer.processor.encode(sentence)
    assert old.decode(old.encode(sentence)) == sentence
    spec["order"] = [0, 1, 2, 3, 5, 5]
    (tmp_path / "tokenizer.json").write_text(json.dumps(spec))
    with pytest.raises(SeqVAEError, match="not a permutation"):
        load_tokenizer(tmp_path)

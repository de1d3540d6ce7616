from collections import Counter

import torch

from seqvae.data.batching import EVAL_ROW_TOKENS, bucketed_batches, collate, encode_split, sorted_batches
from seqvae.data.tokenizers import BOS_ID, EOS_ID, PAD_ID, WordTokenizer


def _lengths(n=1000, seed=0):
    generator = torch.Generator().manual_seed(seed)
    return torch.randint(1, 60, (n,), generator=generator).tolist()


def test_each_sentence_used_exactly_once_per_epoch():
    lengths = _lengths(1003)
    for epoch in range(3):
        batches = bucketed_batches(lengths, batch_size=32, seed=5, epoch=epoch, pool_batches=4)
        counts = Counter(index for batch in batches for index in batch)
        assert sorted(counts) == list(range(1003))
        assert set(counts.values()) == {1}
        assert all(1 <= len(batch) <= 32 for batch in batches)


def test_order_is_a_function_of_seed_and_epoch():
    lengths = _lengths()
    first = bucketed_batches(lengths, batch_size=16, seed=1, epoch=0)
    assert first == bucketed_batches(lengths, batch_size=16, seed=1, epoch=0)
    assert first != bucketed_batches(lengths, batch_size=16, seed=1, epoch=1)
    assert first != bucketed_batches(lengths, batch_size=16, seed=2, epoch=0)


def test_buckets_group_similar_lengths():
    lengths = _lengths(3200)
    batches = bucketed_batches(lengths, batch_size=32, seed=0, epoch=0, pool_batches=50)
    bucketed_padding = sum(max(lengths[i] for i in b) * len(b) - sum(lengths[i] for i in b) for b in batches)
    order = torch.randperm(3200, generator=torch.Generator().manual_seed(0)).tolist()
    random_batches = [order[i : i + 32] for i in range(0, 3200, 32)]
    random_padding = sum(max(lengths[i] for i in b) * len(b) - sum(lengths[i] for i in b) for b in random_batches)
    assert bucketed_padding < 0.1 * random_padding


def test_sorted_batches_cover_everything_in_length_order():
    lengths = _lengths(100)
    batches = sorted_batches(lengths, batch_size=7)
    flat = [i for batch in batches for i in batch]
    assert sorted(flat) == list(range(100))
    assert [lengths[i] for i in flat] == sorted(lengths)


def test_evaluation_batches_give_a_very_long_line_a_small_batch_and_leave_ordinary_ones_alone():
    lengths = _lengths(100)
    assert max(lengths) * 7 <= 7 * EVAL_ROW_TOKENS  # an ordinary corpus: the token cap changes nothing
    assert sorted_batches(lengths, batch_size=7, max_tokens=7 * EVAL_ROW_TOKENS) == sorted_batches(lengths, batch_size=7)
    # one 5,000-token line among them: alone, instead of padding six ordinary rows to its length
    long = lengths + [5000]
    batches = sorted_batches(long, batch_size=7, max_tokens=7 * EVAL_ROW_TOKENS)
    assert batches[-1] == [100] and batches[:-1] == sorted_batches(lengths, batch_size=7)
    assert all(len(batch) * max(long[i] for i in batch) <= 7 * EVAL_ROW_TOKENS for batch in batches[:-1])
    # between: lines of 300 tokens go two to a batch (three would pad to 900 > 7 * 128 = 896 tokens)
    batches = sorted_batches([300] * 7, batch_size=7, max_tokens=7 * EVAL_ROW_TOKENS)
    assert [len(batch) for batch in batches] == [2, 2, 2, 1]


def test_collate_shifts_inputs_and_targets_and_masks_padding():
    batch = collate([[10, 11, 12], [20]])
    assert batch.inputs.tolist() == [[BOS_ID, 10, 11, 12], [BOS_ID, 20, PAD_ID, PAD_ID]]
    assert batch.targets.tolist() == [[10, 11, 12, EOS_ID], [20, EOS_ID, PAD_ID, PAD_ID]]
    assert batch.mask.tolist() == [[True] * 4, [True, True, False, False]]
    assert batch.lengths.tolist() == [4, 2]
    assert batch.num_tokens == 6


def test_length_policy_truncates_or_drops_and_counts():
    tokenizer = WordTokenizer.build(["a b c d e f", "a b"])
    sentences = ["a b c d e f", "a b", "c d e"]
    truncated = encode_split(tokenizer, sentences, max_length=3, policy="truncate")
    assert truncated.lengths == [3, 2, 3] and truncated.truncated == 1 and truncated.dropped == 0
    dropped = encode_split(tokenizer, sentences, max_length=3, policy="drop")
    assert dropped.lengths == [2, 3] and dropped.truncated == 0 and dropped.dropped == 1
    unlimited = encode_split(tokenizer, sentences)
    assert unlimited.lengths == [6, 2, 3] and unlimited.num_tokens == 11 + 3

"""Batching: deterministic order, length grouping, and the label-word layout."""

import random
from collections import Counter

import torch

from lora_ablate.run.batches import Encoded, collate_label_words, eval_index_batches, train_index_batches


def take(stream, n):
    return [next(stream) for _ in range(n)]


def test_train_batches_are_fixed_by_seed_and_cover_each_epoch():
    lengths = [random.Random(i).randint(5, 60) for i in range(320)]
    first = take(train_index_batches(lengths, 16, seed=3), 40)  # two epochs of 20 batches
    assert first == take(train_index_batches(lengths, 16, seed=3), 40)
    assert first != take(train_index_batches(lengths, 16, seed=4), 40)
    for epoch in (first[:20], first[20:]):
        assert sorted(i for batch in epoch for i in batch) == list(range(320))
    assert all(len(batch) == 16 for batch in first)


def test_train_batches_group_lengths_and_carry_the_epoch_tail():
    rng = random.Random(0)
    lengths = [rng.randint(1, 200) for _ in range(1000)]
    stream = train_index_batches(lengths, 32, seed=0)
    batches = take(stream, 200)  # 6400 indices: 6.4 epochs
    padded = sum(32 * max(lengths[i] for i in b) for b in batches)
    real = sum(lengths[i] for b in batches for i in b)
    assert padded / real < 1.25  # random batches of this spread waste ~80%
    counts = Counter(i for b in batches for i in b)
    assert max(counts.values()) - min(counts.values()) <= 2  # 6.4 epochs; tails roll over


def test_label_word_rows_end_with_their_answer():
    items = [Encoded([1, 5, 6], 0, ((7,), (8, 9))), Encoded([1, 5], 1, ((7,), (8, 9)))]
    batch = collate_label_words(items, pad_id=0, all_answers=True)
    ids = batch.tensors["input_ids"]
    assert ids.shape == (4, 5) and batch.keep == 3
    assert ids[1].tolist() == [1, 5, 6, 8, 9]
    assert ids[2].tolist() == [0, 0, 1, 5, 7]
    assert batch.tensors["attention_mask"][2].tolist() == [0, 0, 1, 1, 1]
    assert batch.tensors["position_ids"][2].tolist()[2:] == [0, 1, 2]
    assert batch.tensors["answer_ids"][1].tolist() == [8, 9]
    assert batch.answer_mask.tolist() == [[False, True], [True, True], [False, True], [True, True]]
    train = collate_label_words(items, pad_id=0, all_answers=False)
    assert train.tensors["input_ids"].shape[0] == 2
    assert train.tensors["input_ids"][1, -2:].tolist() == [8, 9]  # the gold answer of item 1
    assert torch.equal(train.labels, torch.tensor([0, 1]))


def test_eval_batches_respect_the_token_budget():
    items = [Encoded([0] * n, 0) for n in [3, 50, 7, 49, 8, 2, 51]]
    batches = eval_index_batches(items, max_tokens=100, max_rows=10)
    assert sorted(i for b in batches for i in b) == list(range(7))
    for b in batches:
        assert len(b) * max(len(items[i].input_ids) for i in b) <= 100 or len(b) == 1


def test_one_token_label_words_score_every_candidate_from_one_row():
    items = [Encoded([1, 5, 6], 1, ((7,), (8,))), Encoded([1, 5], 0, ((7,), (8,)))]
    batch = collate_label_words(items, pad_id=0, all_answers=True)
    assert batch.tensors["input_ids"].tolist() == [[1, 5, 6], [0, 1, 5]]
    assert batch.candidates.tolist() == [7, 8] and batch.keep == 1
    train = collate_label_words(items, pad_id=0, all_answers=False)  # training still appends the answer
    assert train.tensors["input_ids"][0].tolist() == [1, 5, 6, 8]


def test_one_token_fast_path_scores_like_the_general_path():
    from transformers import AutoConfig, AutoModelForCausalLM

    from lora_ablate.run.loop import Session, forward

    torch.manual_seed(0)
    config = AutoConfig.for_model(
        "llama", vocab_size=50, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2,
    )
    session = Session(AutoModelForCausalLM.from_config(config).eval(), "label_words", 2, 0, torch.device("cpu"), None, [], [], [])
    one_token = [Encoded([1, 5, 6, 9], 1, ((7,), (8,))), Encoded([1, 5], 0, ((7,), (8,)))]
    # a third, two-token candidate forces the general path (answer rows, summed log-likelihoods)
    general = [Encoded(i.input_ids, i.label, i.answers + ((8, 8),)) for i in one_token]
    with torch.no_grad():
        fast = forward(session, collate_label_words(one_token, 0, all_answers=True))[1]
        slow = forward(session, collate_label_words(general, 0, all_answers=True))[1].view(2, 3)[:, :2]
    assert torch.allclose(fast, slow, atol=1e-5)

"""The weighted kNN classifier against a brute-force loop."""

from __future__ import annotations

import math

import pytest
import torch

from selfsup.eval.knn import knn_predict, knn_top1


def brute_force_knn(bank, bank_labels, queries, num_classes: int, k: int, temperature: float) -> list[int]:
    """InstDisc's weighted kNN, one query at a time in float64: cosine similarity to every bank
    entry, the k most similar vote for their class with weight exp(sim / T), the heaviest class wins
    (the lowest class index on a tie)."""
    bank, queries = bank.double(), queries.double()
    predictions = []
    for query in queries:
        similarities = [float(query @ entry / (query.norm() * entry.norm())) for entry in bank]
        nearest = sorted(range(len(bank)), key=lambda i: -similarities[i])[:k]
        votes = [0.0] * num_classes
        for i in nearest:
            votes[int(bank_labels[i])] += math.exp(similarities[i] / temperature)
        predictions.append(max(range(num_classes), key=lambda c: votes[c]))
    return predictions


@pytest.mark.parametrize(
    "num_classes,k,temperature", [(2, 1, 0.1), (3, 5, 0.07), (10, 20, 0.5), (10, 200, 0.1), (5, 7, 2.0)]
)
def test_knn_matches_brute_force_in_one_chunk_and_many(num_classes, k, temperature):
    generator = torch.Generator().manual_seed(num_classes * 1000 + k)
    centers = torch.randn(num_classes, 8, generator=generator)
    bank_labels = torch.randint(0, num_classes, (60,), generator=generator)
    bank = centers[bank_labels] + 1.5 * torch.randn(60, 8, generator=generator)  # overlapping classes
    queries = centers[torch.randint(0, num_classes, (23,), generator=generator)] + 1.5 * torch.randn(
        23, 8, generator=generator
    )
    expected = brute_force_knn(bank, bank_labels, queries, num_classes, k, temperature)  # k=200 > 60: every entry votes
    one_chunk = knn_predict(bank, bank_labels, queries, num_classes, k, temperature)
    many_chunks = knn_predict(
        bank, bank_labels, queries, num_classes, k, temperature, chunk_size=4
    )  # 6 chunks, last of 3
    assert one_chunk.tolist() == expected
    assert many_chunks.tolist() == expected


def test_knn_feature_scale_does_not_matter_and_top1_counts_hits():
    generator = torch.Generator().manual_seed(0)
    bank, queries = torch.randn(40, 6, generator=generator), torch.randn(9, 6, generator=generator)
    bank_labels = torch.randint(0, 4, (40,), generator=generator)
    predicted = knn_predict(bank, bank_labels, queries, 4, k=5, temperature=0.1)
    scale = torch.rand(40, 1, generator=generator) * 10 + 0.1  # cosine similarity: per-row scale is irrelevant
    assert torch.equal(knn_predict(bank * scale, bank_labels, queries * 3, 4, k=5, temperature=0.1), predicted)
    labels = predicted.clone()
    labels[:3] = (labels[:3] + 1) % 4  # 3 of 9 wrong
    assert knn_top1(bank, bank_labels, queries, labels, 4, 5, 0.1) == pytest.approx(6 / 9)


def test_knn_vote_ties_go_to_the_lowest_class_and_k_beyond_the_bank_uses_all_of_it():
    bank = torch.tensor([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0]])
    query = torch.tensor([[1.0, 0.1]])
    # Two identical nearest neighbours of classes 2 and 1 tie; the far one (class 0) votes less.
    assert knn_predict(bank, torch.tensor([2, 1, 0]), query, 3, k=2, temperature=0.1).tolist() == [1]
    assert knn_predict(bank, torch.tensor([2, 1, 0]), query, 3, k=100, temperature=0.1).tolist() == [1]
    # k beyond the bank: every entry votes; three far votes of class 0 outweigh one near vote at a high T.
    bank = torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.0, 1.0], [0.0, 1.0]])
    labels = torch.tensor([1, 0, 0, 0])
    assert knn_predict(bank, labels, query, 2, k=1, temperature=10.0).tolist() == [1]
    assert knn_predict(bank, labels, query, 2, k=100, temperature=10.0).tolist() == [0]
    assert brute_force_knn(bank, labels, query, 2, 100, 10.0) == [0]

"""Generate the jigsaw permutation sets with maximal average Hamming distance (Noroozi & Favaro, 2016, Alg. 1).

Greedy selection: a seeded random first permutation, then repeatedly the unchosen permutation of 0..8
with the largest summed Hamming distance to the chosen set. Greedy is incremental, so the first n rows
of one run of the largest count ARE the greedy result for n; one run yields every requested set.
Far-apart permutations keep the classes distinguishable, so the network cannot solve the task from
one or two tiles.

    python scripts/make_jigsaw_permutations.py --counts 100 1000 2000 --seed 0 --out selfsup/data/
"""

from __future__ import annotations

import argparse
import itertools
from pathlib import Path

import numpy as np

TILES = 9


def all_permutations() -> np.ndarray:
    return np.array(list(itertools.permutations(range(TILES))), dtype=np.uint8)  # (9!, 9), lexicographic


def greedy_max_hamming(candidates: np.ndarray, count: int, rng: np.random.Generator) -> np.ndarray:
    """Keep a running sum of each candidate's distance to the chosen set: one O(9!) pass per pick."""
    distance_sum = np.zeros(len(candidates), dtype=np.int64)
    chosen = [int(rng.integers(len(candidates)))]
    for _ in range(count - 1):
        distance_sum += (candidates != candidates[chosen[-1]]).sum(axis=1)
        distance_sum[chosen[-1]] = -1  # never pick a permutation twice; sums only grow, so -1 stays last
        chosen.append(int(np.argmax(distance_sum)))  # ties go to the lexicographically first candidate
    return candidates[chosen]


def pairwise_hamming(perms: np.ndarray) -> tuple[int, float]:
    """Minimum and mean Hamming distance over distinct pairs."""
    distance = (perms[:, None, :] != perms[None, :, :]).sum(axis=2)
    off_diagonal = distance[~np.eye(len(perms), dtype=bool)]
    return int(off_diagonal.min()), float(off_diagonal.mean())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--counts", type=int, nargs="+", default=[100, 1000, 2000])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=Path("selfsup/data"))
    args = parser.parse_args()

    candidates = all_permutations()
    rng = np.random.default_rng(args.seed)
    greedy = greedy_max_hamming(candidates, max(args.counts), rng)
    args.out.mkdir(parents=True, exist_ok=True)
    for count in sorted(args.counts):
        perms = greedy[:count]
        path = args.out / f"jigsaw_permutations_{count}.npy"
        np.save(path, perms)
        random_set = candidates[rng.choice(len(candidates), size=count, replace=False)]
        greedy_min, greedy_mean = pairwise_hamming(perms)
        random_min, random_mean = pairwise_hamming(random_set)
        print(f"{path}: min/mean Hamming greedy {greedy_min}/{greedy_mean:.3f}, random {random_min}/{random_mean:.3f}")


if __name__ == "__main__":
    main()

"""Labeler-agreement analysis: a plain per-item Python loop vs rlhfkit's vectorised numpy, side by side.

    .venv/bin/python bench/agreement.py                 # 200k x 5 comparison, then 1M x 5 with rlhfkit
    .venv/bin/python bench/agreement.py --items 50000 --loop-items 10000

Both sides compute the same per-item analysis on the same vote matrix (majority label, agreement rate,
unanimity, tie) plus the per-labeler leave-one-out agreement, and the results are checked to be equal. The loop
runs on the first ``--loop-items`` items and its time is extrapolated linearly to ``--items`` (the output says so
when it does). Then rlhfkit's full analysis and filter (the above plus Fleiss' kappa, Krippendorff's alpha and
filtering, ``rlhfkit.data.agreement.filter_votes``) is timed on 1,000,000 items x 5 labelers.
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from rlhfkit.data import agreement


def simulated_votes(n_items: int, n_labelers: int = 5, seed: int = 0) -> np.ndarray:
    """Votes of labelers who are right 75% of the time, 10% of votes missing, labeler 0 random."""
    rng = np.random.default_rng(seed)
    truth = rng.random(n_items) < 0.5
    right = rng.random((n_items, n_labelers)) < 0.75
    right[:, 0] = rng.random(n_items) < 0.5
    votes = np.where(right, truth[:, None], ~truth[:, None]).astype(np.int8)
    votes[rng.random(votes.shape) < 0.1] = -1
    return votes


def loop_analysis(rows: list[list[int]]) -> tuple[list, list, list, list, list, list]:
    """The per-item analysis written the obvious way: one Python loop over items (and labelers)."""
    labels, agreements, unanimous, ties = [], [], [], []
    n_labelers = len(rows[0])
    agree, compared = [0] * n_labelers, [0] * n_labelers
    for row in rows:
        n_a = sum(1 for v in row if v == 1)
        n_b = sum(1 for v in row if v == 0)
        n = n_a + n_b
        tie = n_a == n_b
        labels.append(-1 if tie else int(n_a > n_b))
        agreements.append(max(n_a, n_b) / n if n else float("nan"))
        unanimous.append(n >= 2 and (n_a == 0 or n_b == 0))
        ties.append(tie)
        for j, v in enumerate(row):
            if v < 0:
                continue
            others_a, others_b = n_a - (v == 1), n_b - (v == 0)
            if others_a != others_b:
                compared[j] += 1
                agree[j] += (others_a > others_b) == (v == 1)
    return labels, agreements, unanimous, ties, agree, compared


def vectorised_analysis(votes: np.ndarray):
    return agreement.item_stats(votes), agreement.labeler_agreement(votes)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--items", type=int, default=200_000, help="items in the side-by-side comparison")
    parser.add_argument("--loop-items", type=int, default=200_000, help="items the Python loop runs on")
    parser.add_argument("--big", type=int, default=1_000_000, help="items for the rlhfkit-only full run")
    args = parser.parse_args()

    votes = simulated_votes(args.items)
    n_loop = min(args.loop_items, args.items)
    rows = votes[:n_loop].tolist()  # the loop gets plain Python lists (its natural input), not timed

    t0 = time.perf_counter()
    labels, agreements, unanimous, ties, agree, compared = loop_analysis(rows)
    t_loop = (time.perf_counter() - t0) * args.items / n_loop

    t0 = time.perf_counter()
    stats, labelers = vectorised_analysis(votes)
    t_vec = time.perf_counter() - t0

    sub = slice(0, n_loop)
    assert labels == stats.label[sub].tolist() and ties == stats.tie[sub].tolist()
    assert unanimous == stats.unanimous[sub].tolist()
    np.testing.assert_allclose(agreements, stats.agreement[sub])
    if n_loop == args.items:
        assert compared == labelers.n_compared.tolist()
        np.testing.assert_allclose(np.array(agree) / np.array(compared), labelers.agreement)

    n_lab = votes.shape[1]
    note = "" if n_loop == args.items else f" (ran on {n_loop:,} items, extrapolated linearly)"
    print(f"per-item + per-labeler analysis of {args.items:,} items x {n_lab} labelers (results checked equal)")
    print(f"  python loop        {t_loop:8.3f} s{note}")
    print(f"  rlhfkit (numpy)    {t_vec:8.3f} s")
    print(f"  speed-up           {t_loop / t_vec:8.0f}x")

    big = simulated_votes(args.big, seed=1)
    t0 = time.perf_counter()
    result = agreement.filter_votes(big, min_agreement=0.6, drop_unreliable=True)
    t_big = time.perf_counter() - t0
    r = result.report
    print(f"rlhfkit full analysis + filter (kappa, alpha, labelers, drop unreliable) of {args.big:,} x {n_lab}:")
    print(f"  time               {t_big:8.3f} s")
    kappa = "n/a (unequal ratings per item)" if r.fleiss_kappa is None else f"{r.fleiss_kappa:.3f}"
    print(
        f"  alpha {r.krippendorff_alpha:.3f}, kappa {kappa}, flagged labelers {result.dropped_labelers}, "
        f"kept {result.n_kept:,} ({result.n_kept / args.big:.1%})"
    )


if __name__ == "__main__":
    main()

import json

import numpy as np
import pytest

from rlhfkit import lab
from rlhfkit.core.errors import DataError
from rlhfkit.data import agreement as ag

# Fleiss (1971) as tabulated in Wikipedia's "Fleiss' kappa" article: 10 subjects, 14 raters, 5 categories.
FLEISS_TABLE = [
    [0, 0, 0, 0, 14],
    [0, 2, 6, 4, 2],
    [0, 0, 3, 5, 6],
    [0, 3, 9, 2, 0],
    [2, 2, 8, 1, 1],
    [7, 7, 0, 0, 0],
    [3, 2, 6, 3, 0],
    [2, 5, 3, 2, 2],
    [6, 5, 2, 1, 0],
    [0, 2, 2, 3, 7],
]
# Krippendorff, "Computing Krippendorff's Alpha-Reliability" (2011), nominal example: 4 observers x 12 units,
# values 1..5, "." = missing (here -1). Published nominal alpha = 0.743.
M = -1
KRIPPENDORFF_OBSERVERS = [
    [1, 2, 3, 3, 2, 1, 4, 1, 2, M, M, M],
    [1, 2, 3, 3, 2, 2, 4, 1, 2, 5, M, 3],
    [M, 3, 3, 3, 2, 3, 4, 2, 2, 5, 1, M],
    [1, 2, 3, 3, 2, 4, 4, 1, 2, 5, 1, M],
]


def test_fleiss_kappa_matches_published_value():
    assert ag.fleiss_kappa(np.array(FLEISS_TABLE)) == pytest.approx(0.210, abs=5e-4)


def test_krippendorff_alpha_matches_published_value():
    votes = np.array(KRIPPENDORFF_OBSERVERS).T  # (units, observers)
    assert ag.krippendorff_alpha(votes) == pytest.approx(0.743, abs=5e-4)


def test_fleiss_kappa_needs_equal_ratings_per_item():
    with pytest.raises(DataError, match="same number"):
        ag.fleiss_kappa(np.array([[1, 1], [2, 1]]))
    votes = np.array([[1, 1, 0], [1, 0, -1], [0, 0, 0]], dtype=np.int8)  # item 2 has 2 ratings
    report = ag.analyze(votes)
    assert report.fleiss_kappa is None and "same number" in report.fleiss_kappa_note
    assert report.krippendorff_alpha is not None  # alpha handles missing votes


def test_kappa_and_alpha_agree_on_complete_binary_votes():
    """With every item rated by every labeler the two coefficients differ only by a small-sample correction."""
    pool = lab.LabelerPool(5, noise=0.25, seed=3)
    gold_a, gold_b = np.random.default_rng(0).random((2, 5000))
    votes = pool.vote_arrays(gold_a, gold_b, np.zeros(5000), np.zeros(5000))
    report = ag.analyze(votes)
    assert report.fleiss_kappa == pytest.approx(report.krippendorff_alpha, abs=1e-3)
    assert 0.2 < report.fleiss_kappa < 0.4  # noise 0.25: each vote right 75% -> kappa = (1 - 2 * 0.25)^2 = 0.25


def test_item_stats_by_hand():
    votes = np.array(
        [
            [1, 1, 1, 1, 1],  # unanimous a
            [0, 0, 0, 1, 1],  # 3/5 b
            [1, 0, -1, -1, -1],  # tie
            [-1, -1, -1, -1, -1],  # nobody rated
            [0, -1, -1, -1, -1],  # one vote: majority b, not unanimous
        ],
        dtype=np.int8,
    )
    s = ag.item_stats(votes)
    assert s.label.tolist() == [1, 0, -1, -1, 0]
    np.testing.assert_allclose(s.agreement, [1.0, 0.6, 0.5, np.nan, 1.0])
    assert s.n_votes.tolist() == [5, 5, 2, 0, 1]
    assert s.unanimous.tolist() == [True, False, False, False, False]
    assert s.tie.tolist() == [False, False, True, True, False]
    report = ag.analyze(votes, threshold=0.6)
    assert report.n_votes == 13 and report.share_ties == pytest.approx(0.4)
    assert report.share_below == pytest.approx(0.4)  # the tie and the unrated item; 3/5 is not below 0.6
    assert report.mean_agreement == pytest.approx((1 + 0.6 + 0.5 + 1) / 4)
    json.dumps(report.to_dict())  # serialisable for reports


def test_check_votes_rejects_bad_values():
    with pytest.raises(DataError, match="other than 1"):
        ag.item_stats(np.array([[1, 3]]))
    with pytest.raises(DataError, match="shape"):
        ag.item_stats(np.array([1, 0]))
    with pytest.raises(DataError, match="dtype"):
        ag.item_stats(np.array([[0.5, 1.0]]))


def test_leave_one_out_labeler_agreement_by_hand():
    votes = np.array([[1, 1, 0], [1, 1, 0], [0, 0, 1], [1, 0, -1]], dtype=np.int8)
    stats = ag.labeler_agreement(votes)
    # labeler 0 vs others' majority: item0 others (1,0) tie -> excluded; same for 1, 2; item3 others (0) -> disagree
    # labeler 2: items 0-2 others agree with each other and against labeler 2 -> 0/3
    assert stats.n_compared.tolist() == [1, 1, 3]
    np.testing.assert_allclose(stats.agreement, [0.0, 0.0, 0.0])
    assert stats.n_rated.tolist() == [4, 4, 3]
    assert not stats.flagged.any()  # fewer than MIN_COMPARED items: too little evidence to flag


def test_bad_labeler_is_flagged_and_dropping_it_helps():
    pool = lab.LabelerPool(5, noise=[0.15, 0.15, 0.15, 0.15, 0.5], seed=0)  # labeler 4 votes at random
    rows = lab.comparison_dataset(1500, pool, seed=1)
    votes = np.array([r["votes"] for r in rows], dtype=np.int8)
    labelers = ag.labeler_agreement(votes)
    assert labelers.flagged.tolist() == [False, False, False, False, True]
    assert labelers.agreement[4] == pytest.approx(0.5, abs=0.05) and labelers.agreement[:4].min() > 0.75

    gold_a, gold_b = np.array([[r["gold_a"], r["gold_b"]] for r in rows]).T
    decided = gold_a != gold_b
    kept_plain = ag.filter_votes(votes, min_agreement=0.6)
    kept_clean = ag.filter_votes(votes, min_agreement=0.6, drop_unreliable=True)
    assert kept_clean.dropped_labelers == [4] and kept_plain.dropped_labelers == []
    assert (kept_clean.stats.n_votes <= 4).all()

    def gold_share(result):
        keep = result.keep & decided
        return (result.stats.label[keep] == (gold_a > gold_b)[keep]).mean()

    assert gold_share(kept_clean) > gold_share(kept_plain) + 0.02  # about 0.987 vs 0.942


def test_agreement_filtering_keeps_pairs_that_agree_with_gold():
    """The claim behind filtering: high-agreement majorities agree with the gold preference more often."""
    pool = lab.LabelerPool(5, noise=0.3, seed=0)
    rows = lab.comparison_dataset(3000, pool, seed=1)
    votes = np.array([r["votes"] for r in rows], dtype=np.int8)
    gold_a, gold_b = np.array([[r["gold_a"], r["gold_b"]] for r in rows]).T
    decided = gold_a != gold_b  # equal gold rewards have no right answer
    gold_label = (gold_a > gold_b).astype(np.int8)

    everything = ag.filter_votes(votes, min_agreement=0.0)
    filtered = ag.filter_votes(votes, min_agreement=0.8)
    before = (everything.stats.label == gold_label)[everything.keep & decided].mean()
    after = (filtered.stats.label == gold_label)[filtered.keep & decided].mean()
    kept = filtered.keep.mean()
    print(f"gold agreement before {before:.3f} after {after:.3f}, kept {kept:.3f}")
    assert everything.keep.all()  # 5 votes: never a tie
    assert after > before + 0.05
    assert 0.3 < kept < 0.8
    assert filtered.dropped == {
        "no votes": 0,
        "identical responses": 0,
        "tie": 0,
        "below min_agreement": int((~filtered.keep).sum()),
    }


def test_filter_counts_ties_and_unrated_and_validates_threshold():
    votes = np.array([[1, 0, -1], [-1, -1, -1], [1, 1, 0], [1, 1, 1]], dtype=np.int8)
    result = ag.filter_votes(votes, min_agreement=0.7)
    assert result.keep.tolist() == [False, False, False, True]
    assert result.dropped == {"no votes": 1, "identical responses": 0, "tie": 1, "below min_agreement": 1}
    with pytest.raises(DataError, match="min_agreement"):
        ag.filter_votes(votes, min_agreement=60)


def test_missing_votes_from_labeler_subsets():
    """Each item rated by 3 of 7 labelers (different subsets): kappa, alpha and per-labeler stats all work."""
    pool = lab.LabelerPool(7, noise=0.2, seed=2)
    rows = lab.comparison_dataset(800, pool, seed=3, labelers_per_item=3)
    votes = np.array([r["votes"] for r in rows], dtype=np.int8)
    report = ag.analyze(votes)
    assert (ag.item_stats(votes).n_votes == 3).all()
    assert report.fleiss_kappa is not None  # every item has exactly 3 ratings, so kappa is defined
    assert 0.2 < report.krippendorff_alpha < 0.6
    assert report.labelers.n_rated.sum() == 3 * 800 and not report.labelers.flagged.any()


# ----------------------------------------------------------------------------- ties as a category, vs the libraries
def _votes_with_ties(n_items: int, n_labelers: int, missing: float, seed: int) -> np.ndarray:
    """Labelers who mostly follow a per-item truth in {b, a, tie}, with a share of votes missing."""
    rng = np.random.default_rng(seed)
    truth = rng.choice([ag.B, ag.A, ag.TIE], size=n_items, p=[0.4, 0.4, 0.2])
    votes = np.where(rng.random((n_items, n_labelers)) < 0.7, truth[:, None], rng.integers(0, 3, (n_items, 1)))
    votes = votes.astype(np.int8)
    votes[rng.random(votes.shape) < missing] = ag.MISSING
    return votes


def test_statistics_with_ties_and_missing_votes_equal_the_libraries():
    import krippendorff
    from sklearn.metrics import cohen_kappa_score
    from statsmodels.stats.inter_rater import aggregate_raters, fleiss_kappa

    votes = _votes_with_ties(400, 4, missing=0.25, seed=0)
    report = ag.analyze(votes, names=["ann1", "ann2", "ann3", "ann4"])
    reliability = np.where(votes == ag.MISSING, np.nan, votes).T.astype(float)  # (raters, units), NaN = missing
    expected_alpha = krippendorff.alpha(reliability_data=reliability, level_of_measurement="nominal")
    assert report.krippendorff_alpha == pytest.approx(expected_alpha, abs=1e-12)
    assert report.fleiss_kappa is None and "same number" in report.fleiss_kappa_note  # 0-4 votes per item
    assert len(report.cohen_kappa) == 6 and report.cohen_kappa_items["ann1,ann3"] > 150
    for j, k in [(0, 1), (1, 3), (2, 3)]:
        name_j, name_k = f"ann{j + 1}", f"ann{k + 1}"
        both = (votes[:, j] >= 0) & (votes[:, k] >= 0)
        expected = cohen_kappa_score(votes[both, j], votes[both, k])
        assert report.cohen_kappa[f"{name_j},{name_k}"] == pytest.approx(expected, abs=1e-12)
        assert report.cohen_kappa_items[f"{name_j},{name_k}"] == both.sum()

    complete = _votes_with_ties(400, 5, missing=0.0, seed=1)
    complete[:10] = ag.MISSING  # items nobody rated are left out of the statistics, not counted as disagreement
    table, _ = aggregate_raters(complete[10:])
    full = ag.analyze(complete)
    assert full.fleiss_kappa == pytest.approx(fleiss_kappa(table, method="fleiss"), abs=1e-12)
    assert full.n_rated_items == 390 and 0.3 < full.fleiss_kappa < 0.7
    assert full.share_tie_votes == pytest.approx((complete == ag.TIE).sum() / (complete >= 0).sum())


def test_cohen_kappa_matches_the_published_worked_example():
    """Wikipedia's "Cohen's kappa" example: 50 grant proposals, readers A and B; 20 yes/yes, 5 yes(A)/no(B),
    10 no(A)/yes(B), 15 no/no: p_o = 0.7, p_e = 0.5, kappa = 0.4."""
    pairs = [(1, 1)] * 20 + [(1, 0)] * 5 + [(0, 1)] * 10 + [(0, 0)] * 15
    kappa, shared = ag.cohen_kappas(np.array(pairs, dtype=np.int8), ["A", "B"])
    assert kappa == {"A,B": pytest.approx(0.4, abs=1e-12)} and shared == {"A,B": 50}
    undefined, _ = ag.cohen_kappas(np.array([[1, 1], [1, 1], [0, -1]], dtype=np.int8), ["A", "B"])
    assert undefined == {"A,B": None}  # both put every shared item in one category: chance agreement is 1


def test_tie_majority_and_leave_one_out_with_ties_by_hand():
    T = ag.TIE
    votes = np.array(
        [
            [1, 1, T],  # a (2/3)
            [1, T, T],  # tie is the majority
            [T, T, T],  # unanimous tie
            [1, 0, T],  # no single majority
            [0, 0, -1],  # b, unanimous
        ],
        dtype=np.int8,
    )
    s = ag.item_stats(votes)
    assert s.label.tolist() == [1, 2, 2, -1, 0]
    np.testing.assert_allclose(s.agreement, [2 / 3, 2 / 3, 1.0, 1 / 3, 1.0])
    assert s.unanimous.tolist() == [False, False, True, False, True]
    assert s.tie.tolist() == [False, True, True, True, False]
    lab_stats = ag.labeler_agreement(votes)
    # labeler 0 vs the others' majority: item0 (1, T) none; item1 (T, T) tie, disagree; item2 tie, agree;
    # item3 (0, T) none; item4 (0) b, agree -> 2/3. Labeler 2: item0 a vs T no; item1 (1, T) none; item2 yes;
    # item3 (1, 0) none; item4 unrated -> 1/2.
    np.testing.assert_allclose(lab_stats.agreement[[0, 2]], [2 / 3, 1 / 2])
    np.testing.assert_allclose(lab_stats.tie_rate, [1 / 5, 2 / 5, 4 / 4])


def test_ties_drop_or_margin():
    T = ag.TIE
    votes = np.array([[1, 1, T], [1, T, T], [T, T, T], [1, 0, T], [0, 0, 0], [1, 0, 0]], dtype=np.int8)
    drop = ag.filter_votes(votes, min_agreement=0.0)
    assert drop.keep.tolist() == [True, False, False, False, True, True]
    assert drop.dropped["tie"] == 3 and drop.label.tolist() == [1, -1, -1, -1, 0, 0]
    margin = ag.filter_votes(votes, min_agreement=0.0, ties="margin")
    assert margin.keep.tolist() == [True, True, False, False, True, True]  # (a, tie, tie): a beats b 1-0
    np.testing.assert_allclose(margin.margin[margin.keep], [2 / 3, 1 / 3, 1.0, 1 / 3])
    np.testing.assert_allclose(margin.agreement[margin.keep], [2 / 3, 1 / 3, 1.0, 2 / 3])
    assert margin.dropped == {"no votes": 0, "identical responses": 0, "tie": 2, "below min_agreement": 0}
    strict = ag.filter_votes(votes, min_agreement=0.6, ties="margin", identical=[False] * 5 + [True])
    assert strict.keep.tolist() == [True, False, False, False, True, False]
    assert strict.dropped == {"no votes": 0, "identical responses": 1, "tie": 2, "below min_agreement": 1}
    with pytest.raises(DataError, match="ties='keep'"):
        ag.filter_votes(votes, ties="keep")


def test_a_labeler_who_ties_everything_is_flagged():
    pool = lab.LabelerPool(4, noise=0.15, seed=0)
    rows = lab.comparison_dataset(300, pool, seed=1)
    votes = np.array([r["votes"] + [ag.TIE] for r in rows], dtype=np.int8)  # labeler 4 always says "tie"
    report = ag.analyze(votes, names=["w0", "w1", "w2", "w3", "lazy"])
    assert report.labelers.flagged.tolist() == [False] * 4 + [True]
    assert report.labelers.tie_rate[4] == 1.0 and report.labelers.many_ties[4]
    assert report.to_dict()["labelers"][4] | {"agreement": None} == {
        "labeler": "lazy",
        "agreement": None,
        "n_rated": 300,
        "n_compared": report.labelers.n_compared[4],
        "tie_rate": 1.0,
        "flagged": True,
        "flag_reasons": ["low agreement", "ties"],
    }
    kept = ag.filter_votes(votes, min_agreement=0.6, drop_unreliable=True)
    assert kept.dropped_labelers == [4]  # 4 votes left: 2-2 splits are the only ties
    assert kept.dropped["tie"] == ((votes[:, :4] == ag.A).sum(axis=1) == 2).sum() > 0
    json.dumps(report.to_dict())

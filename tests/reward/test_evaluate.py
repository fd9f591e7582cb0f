"""rm_eval: statistics against hand-computed values, evaluation end to end, the gate, the report files and the
``rlhfkit eval-rm`` command (formatting and scoring themselves: ``tests/models/test_scoring.py``)."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from rlhfkit.models.scoring import score_texts, tokenize_pair
from rlhfkit.reward.evaluate import report_from_scores
from rlhfkit.reward.gate import GateVerdict, rm_gate
from rlhfkit.reward.report import markdown, write_report


def logit(p: float) -> float:
    return math.log(p / (1 - p))


def sigmoid(x: float) -> float:
    return 1 / (1 + math.exp(-x))


def calibrated_margins(groups: list[tuple[float, int, int]]) -> np.ndarray:
    """``(confidence, n_correct, n_wrong)`` -> margins +-logit(confidence)."""
    return np.array([m for c, k, w in groups for m in [logit(c)] * k + [-logit(c)] * w])


# ----------------------------------------------------------------------------- statistics
def test_accuracy_ties_auc_brier_by_hand():
    report = report_from_scores([2.0, 1.0, 0.0, 1.0], [1.0, 1.0, 1.0, 0.0])  # margins 1, 0, -1, 1
    assert report.n_pairs == 4 and report.n_correct == 2 and report.n_ties == 1
    assert report.accuracy == 0.5 and report.tie_rate == 0.25  # a tie is not a win
    # AUC of positives {1, 0, -1, 1} vs negatives {-1, 0, 1, -1}: wins 3.5 + 2.5 + 1 + 3.5 of 16 (ties = 1/2)
    assert report.auc == pytest.approx(10.5 / 16)
    p = [sigmoid(1), 0.5, sigmoid(-1), sigmoid(1)]
    assert report.brier == pytest.approx(sum((1 - x) ** 2 for x in p) / 4)
    assert report.margin_mean == pytest.approx(0.25)
    assert report.margin_correct_mean == pytest.approx(1.0)
    assert report.margin_incorrect_mean == pytest.approx(-0.5)  # ties count as incorrect
    assert report.reward_mean == pytest.approx(7 / 8)
    assert report.reward_std == pytest.approx(np.std([2, 1, 0, 1, 1, 1, 1, 0]))
    assert report.chosen_quantiles["median"] == pytest.approx(1.0)
    assert sum(report.chosen_hist) == sum(report.rejected_hist) == 4
    assert [w["index"] for w in report.worst_pairs[:2]] == [2, 1]  # most negative margin first


def test_perfectly_calibrated_scores_have_zero_ece():
    # sigmoid(margin) = 0.55, 0.75, 0.95 and the chosen response wins 55%, 75%, 95% of those pairs
    margin = calibrated_margins([(0.55, 11, 9), (0.75, 3, 1), (0.95, 19, 1)])
    report = report_from_scores(margin, np.zeros_like(margin))
    assert report.ece == pytest.approx(0.0, abs=1e-12)
    bins = {round(b["lo"], 1): b for b in report.reliability}
    assert bins[0.7]["count"] == 4  # 3 wins at 0.75 + the mirrored loss (P(rejected wins) = 0.75, it did not)
    assert bins[0.7]["confidence"] == pytest.approx(0.75) and bins[0.7]["accuracy"] == pytest.approx(0.75)
    assert bins[0.9]["accuracy"] == pytest.approx(0.95)
    assert sum(b["count"] for b in report.reliability) == 2 * report.n_pairs
    assert bins[0.3]["count"] == 0 and bins[0.3]["confidence"] is None  # empty bin


def test_overconfident_scores_ece_brier_auc_by_hand():
    margin = calibrated_margins([(0.85, 5, 5)])  # 85% confident, right half the time
    report = report_from_scores(margin, np.zeros_like(margin))
    assert report.accuracy == 0.5
    assert report.ece == pytest.approx(0.35)
    assert report.brier == pytest.approx(0.5 * 0.15**2 + 0.5 * 0.85**2)
    assert report.auc == pytest.approx(0.5)  # 25 wins + 50 ties / 2 over 100
    assert report.margin_separation is None  # no spread within either group: Cohen's d is undefined


def test_margin_separation_is_cohens_d():
    margin = np.array([1.0, 3.0, -1.0, -2.0, -3.0])
    report = report_from_scores(margin, np.zeros(5))
    pooled = math.sqrt((1 * 2.0 + 2 * 1.0) / 3)  # sample variances 2 and 1
    assert report.margin_separation == pytest.approx((2.0 - (-2.0)) / pooled)


def test_pure_length_scorer_is_flagged_and_gated():
    rng = np.random.default_rng(0)
    n = 200
    short, long_ = rng.integers(10, 100, n), rng.integers(110, 300, n)
    chosen_longer = np.arange(n) < 0.8 * n  # the data prefers the longer response 80% of the time
    lc = np.where(chosen_longer, long_, short)
    lr = np.where(chosen_longer, short, long_)
    report = report_from_scores(lc.astype(float), lr.astype(float), chosen_lengths=lc, rejected_lengths=lr)
    assert report.accuracy == pytest.approx(0.8)  # = how often the chosen response is longer
    assert report.chosen_longer_rate == pytest.approx(0.8)
    assert report.length_spearman == pytest.approx(1.0)
    assert report.length_margin_spearman == pytest.approx(1.0)
    assert report.longer_preferred_rate == 1.0
    assert report.accuracy_chosen_longer == 1.0 and report.accuracy_chosen_shorter == 0.0
    verdict = rm_gate(report)
    assert not verdict.passed  # accuracy alone would pass
    assert "length" in verdict.summary and "\n" not in verdict.summary
    assert any("shorter response is chosen" in r for r in verdict.reasons)
    assert any("leans on length" in w for w in verdict.warnings)
    assert rm_gate(report, max_length_bias=None, max_pair_length_bias=None).passed  # the length checks can be off


def test_a_margin_that_follows_the_length_difference_warns_and_can_gate():
    rng = np.random.default_rng(0)
    n = 300
    lc, lr = rng.integers(10, 200, n), rng.integers(10, 200, n)
    quality = rng.normal(size=n) + 1.0  # the chosen response is usually better: accuracy ~0.8
    # the margin: quality plus how much longer chosen is, weighted as a length-biased reward model would
    rc, rr = quality + 0.02 * (lc - lr), np.zeros(n)
    report = report_from_scores(rc, rr, chosen_lengths=lc, rejected_lengths=lr)
    diff, margin = lc - lr, rc - rr
    from scipy.stats import spearmanr

    assert report.length_margin_spearman == pytest.approx(spearmanr(margin, diff).statistic)
    assert report.length_margin_spearman > 0.5
    verdict = rm_gate(report, max_length_bias=None, max_pair_length_bias=None)  # None: a warning, not a failure
    assert verdict.passed and any("reward margin follows the length difference" in w for w in verdict.warnings)
    verdict = rm_gate(report, max_length_bias=None)  # the default level, 0.5, refuses it
    assert not verdict.passed and "margin tracks length within pairs" in verdict.summary
    assert "max_pair_length_bias 0.5" in verdict.summary
    assert any("length-balance the preference data" in r for r in verdict.reasons)
    # swapping chosen and rejected (the labels) leaves the statistic as it is: it does not need unbiased labels
    swapped = report_from_scores(rr, rc, chosen_lengths=lr, rejected_lengths=lc)
    assert swapped.length_margin_spearman == pytest.approx(report.length_margin_spearman)
    # a margin that ignores length stays quiet
    quiet = report_from_scores(quality, rr, chosen_lengths=lc, rejected_lengths=lr)
    assert abs(quiet.length_margin_spearman) < 0.3
    assert not any("follows the length difference" in w for w in rm_gate(quiet, max_pair_length_bias=0.5).warnings)


def test_subset_and_agreement_splits():
    rc = [1.0, 1.0, 0.0, 1.0, 0.0, 1.0]
    rr = [0.0, 0.0, 1.0, 1.0, 1.0, 0.0]  # correct: T T F tie F T
    subsets = ["chat", "chat", "chat", "safety", "safety", None]
    agreement = [1.0, 0.95, 0.65, 0.55, None, 0.8]
    report = report_from_scores(rc, rr, subsets=subsets, agreement=agreement)
    assert report.subsets == {
        "(none)": {"n": 1, "accuracy": 1.0, "ties": 0},
        "chat": {"n": 3, "accuracy": pytest.approx(2 / 3), "ties": 0},
        "safety": {"n": 2, "accuracy": 0.0, "ties": 1},
    }
    assert list(report.agreement) == ["< 0.6", "[0.6, 0.7)", "[0.8, 0.9)", ">= 0.9"]  # sorted, unknown left out
    assert report.agreement[">= 0.9"] == {"n": 2, "accuracy": 1.0, "ties": 0}
    assert report.agreement["[0.6, 0.7)"]["accuracy"] == 0.0


def test_report_is_json_safe_and_markdown_has_sections():
    report = report_from_scores([1.0, 1.0], [1.0, 1.0])  # all ties: undefined statistics become None
    data = json.loads(json.dumps(report.to_dict(), allow_nan=False))
    assert data["accuracy"] == 0.0 and data["n_ties"] == 2 and data["length_spearman"] is None
    assert data["margin_separation"] is None
    text = markdown(report, GateVerdict(False, ["r"], ["w"], "s"))
    assert "**Gate: FAILED** — s" in text and "## Calibration" in text


# ----------------------------------------------------------------------------- gate
def _scores_with_accuracy(acc: float, n: int = 400, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    margin = np.abs(rng.normal(1.0, 0.5, n)) + 0.01
    margin[rng.permutation(n)[: round((1 - acc) * n)]] *= -1
    r_rejected = rng.normal(0, 1, n)
    return r_rejected + margin, r_rejected


def test_gate_stops_a_weak_reward_model_and_passes_a_good_one():
    weak = report_from_scores(*_scores_with_accuracy(0.5))
    verdict = rm_gate(weak)
    assert not verdict.passed
    assert verdict.summary.startswith("accuracy 0.500 < min_accuracy 0.60") and "\n" not in verdict.summary
    assert "too weak to steer RL" in verdict.reasons[0] and "rlhfkit data agreement" in verdict.reasons[0]

    good = report_from_scores(*_scores_with_accuracy(0.78))
    verdict = rm_gate(good)
    assert verdict.passed and verdict.reasons == []
    assert verdict.summary.startswith("passed (accuracy 0.780 >= 0.60 on 400 pairs")


def test_gate_warnings_and_min_pairs():
    borderline = rm_gate(report_from_scores(*_scores_with_accuracy(0.62)))
    assert borderline.passed and any("65%" in w and "data problems" in w for w in borderline.warnings)
    assert any("95% interval" in w for w in borderline.warnings)
    usable = rm_gate(report_from_scores(*_scores_with_accuracy(0.68)))
    assert usable.passed and any("70%-80%" in w for w in usable.warnings)
    few = rm_gate(report_from_scores(*_scores_with_accuracy(0.9, n=20)))
    assert not few.passed and few.summary == "only 20 pairs evaluated (min_pairs=30)"
    swapped = rm_gate(report_from_scores(*_scores_with_accuracy(0.2)))
    assert "swapped" in swapped.reasons[0]
    assert not rm_gate(report_from_scores(*_scores_with_accuracy(0.78)), min_accuracy=0.8).passed


# ----------------------------------------------------------------------------- with a model
ROWS = [
    {"prompt": "Q: List 3 fruits.\nA:", "chosen": " apple, pear, plum.", "rejected": " apple."},
    {"prompt": "Q: Name 2 colours.\nA:", "chosen": " red, blue.", "rejected": " red, blue, green, red, blue, pink."},
    {"prompt": "Q: List 1 animal.\nA:", "chosen": " cat.", "rejected": " dog, dog."},
]


@pytest.fixture(scope="module")
def reward_dir(nano_model, tmp_path_factory):
    """A nano sequence-classification reward model with a fixed (random) score head."""
    import torch

    from rlhfkit.models.loading import load_reward_model

    torch.manual_seed(0)
    model, tokenizer = load_reward_model(nano_model)
    out = tmp_path_factory.mktemp("rm") / "reward"
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    return out


@pytest.fixture(scope="module")
def reward(reward_dir):
    from rlhfkit.models.loading import load_reward_model

    return load_reward_model(reward_dir)


def test_evaluate_reward_model_end_to_end(reward):
    from datasets import Dataset

    from rlhfkit.reward.evaluate import evaluate_reward_model

    model, tokenizer = reward
    rows = [dict(r, subset=s) for r, s in zip(ROWS, ["a", "a", "b"])]
    report = evaluate_reward_model(model, tokenizer, Dataset.from_list(rows), batch_size=2)
    r_chosen = score_texts(model, tokenizer, [r["prompt"] + r["chosen"] for r in ROWS])
    assert report.n_pairs == 3 and set(report.subsets) == {"a", "b"}
    assert report.chosen_mean == pytest.approx(r_chosen.mean(), abs=1e-6)
    assert report.worst_pairs[0]["prompt"] in [r["prompt"] for r in ROWS]
    longest = [max(len(ids) for ids in tokenize_pair(tokenizer, r)) for r in ROWS]
    dropped = evaluate_reward_model(model, tokenizer, ROWS, max_length=min(longest))  # as RewardTrainer filters
    assert dropped.n_dropped == sum(n > min(longest) for n in longest) >= 1
    assert dropped.n_pairs == 3 - dropped.n_dropped


# ----------------------------------------------------------------------------- files and CLI
def test_write_report_is_atomic(tmp_path, monkeypatch):
    report = report_from_scores(*_scores_with_accuracy(0.7, n=50))
    paths = write_report(report, tmp_path / "ok", verdict=rm_gate(report))
    assert sorted(p.name for p in (tmp_path / "ok").iterdir()) == [
        "reliability.png",
        "report.json",
        "report.md",
        "rewards_hist.png",
    ]
    assert json.loads(paths["report.json"].read_text())["gate"]["passed"] is True
    assert paths["reliability.png"].read_bytes()[:4] == b"\x89PNG"

    import matplotlib.figure

    def fail(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(matplotlib.figure.Figure, "savefig", fail)
    with pytest.raises(OSError):
        write_report(report, tmp_path / "bad")
    assert list((tmp_path / "bad").iterdir()) == []  # no temp file, no report.json


def test_cli_on_real_hh_slice(reward_dir, hh_file, tmp_path, capsys):
    from rlhfkit.cli import main

    out = tmp_path / "report"
    code = main(["eval-rm", str(reward_dir), str(hh_file), "--out", str(out), "--max-pairs", "6", "--batch-size", "4"])
    data = json.loads((out / "report.json").read_text())
    assert code == (0 if data["gate"]["passed"] else 1) == 1  # 6 pairs < min_pairs: the gate fails
    assert data["n_pairs"] == 6 and data["length_unit"] == "characters"
    assert sorted(p.name for p in out.iterdir()) == ["reliability.png", "report.json", "report.md", "rewards_hist.png"]
    assert "reward_mean / reward_std" in capsys.readouterr().out


def test_cli_explicit_columns_keep_subset_and_agreement(reward_dir, tmp_path):
    from rlhfkit.cli import main

    data = tmp_path / "pairs.jsonl"
    rows = [dict(r, subset=s, agreement=a) for r, s, a in zip(ROWS, ["x", "y", "x"], [1.0, 0.6, 0.8])]
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    assert main(["eval-rm", str(reward_dir), str(data), "--out", str(tmp_path / "out"), "--min-accuracy", "0"]) == 1
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    assert report["gate"]["summary"].startswith("only 3 pairs evaluated (min_pairs=30)")
    assert set(report["subsets"]) == {"x", "y"} and sum(g["n"] for g in report["agreement"].values()) == 3


def test_cli_errors_are_one_line_and_write_nothing(reward_dir, hh_file, tmp_path, capsys):
    from rlhfkit.cli import main

    out = tmp_path / "report"
    assert main(["eval-rm", str(tmp_path / "no-model"), str(hh_file), "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: MODEL=") and "does not exist" in err and "\n" not in err
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"prompt": "Q: hi\\nA:", "chosen": " a.", "rejected": " a."}\n')
    assert main(["eval-rm", str(reward_dir), str(bad), "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert "row 1" in err and "\n" not in err
    assert not out.exists()

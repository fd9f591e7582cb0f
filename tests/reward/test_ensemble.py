"""Reward-model ensembles: aggregation against a hand computation, member standardisation, the scorer as a GRPO /
PPO reward function, the saved ensemble format, and evaluation with disagreement."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from rlhfkit.core.errors import ConfigError
from rlhfkit.models.scoring import ENSEMBLE_MEAN_KEY, ENSEMBLE_STD_KEY, EnsembleScorer, aggregate_rewards
from rlhfkit.reward.config import RewardConfig
from rlhfkit.reward.ensemble import ENSEMBLE_FILE, EnsembleMember, bootstrap, read_ensemble, write_ensemble
from rlhfkit.reward.evaluate import evaluate_ensemble

# 3 members x 2 responses, standardised scores
SCORES = torch.tensor([[1.0, -0.5], [2.0, 0.5], [3.0, 0.0]])


def test_aggregations_match_a_hand_computation():
    # response 0: members 1, 2, 3 -> mean 2, population std sqrt(((1-2)^2 + 0 + (3-2)^2) / 3) = sqrt(2/3)
    # response 1: members -0.5, 0.5, 0 -> mean 0, std sqrt((0.25 + 0.25 + 0) / 3) = sqrt(1/6)
    mean = aggregate_rewards(SCORES, "mean")
    assert mean.tolist() == pytest.approx([2.0, 0.0])
    assert aggregate_rewards(SCORES, "min").tolist() == pytest.approx([1.0, -0.5])
    penalised = aggregate_rewards(SCORES, "mean_minus_std", coef=0.5)
    assert penalised.tolist() == pytest.approx([2.0 - 0.5 * math.sqrt(2 / 3), 0.0 - 0.5 * math.sqrt(1 / 6)])
    assert torch.allclose(penalised, mean - 0.5 * torch.from_numpy(np.std(SCORES.numpy(), axis=0)))


def test_one_member_is_that_member_and_bad_arguments_are_one_line_errors():
    one = torch.tensor([[0.3, -1.2]])
    for how in ("mean", "min", "mean_minus_std"):
        assert aggregate_rewards(one, how).tolist() == pytest.approx([0.3, -1.2])
    with pytest.raises(ConfigError, match="reward_aggregation='median' must be one of"):
        aggregate_rewards(SCORES, "median")
    with pytest.raises(ConfigError, match="reward_ensemble_coef=-1"):
        aggregate_rewards(SCORES, "mean_minus_std", coef=-1)
    with pytest.raises(ConfigError, match="ensemble_size=0: must be >= 1"):
        RewardConfig(output_dir="x", ensemble_size=0, report_to=[], use_cpu=True, bf16=False)


class _FixedScorer:
    """A member returning fixed standardised scores (the RewardModelScorer interface: model, __call__)."""

    def __init__(self, scores, model):
        self.scores, self.model = scores, model

    def __call__(self, prompts, completions, **kwargs):
        return self.scores[: len(completions)]


def test_scorer_aggregates_logs_the_spread_and_normalises():
    model = torch.nn.Linear(1, 1)
    members = [_FixedScorer(row.tolist(), model) for row in SCORES]
    logged = {}
    scorer = EnsembleScorer(members, aggregation="mean_minus_std", coef=1.0, mean=1.0, std=2.0)
    rewards = scorer(["p", "q"], ["a", "b"], log_metric=lambda k, v: logged.__setitem__(k, v))
    expected = (aggregate_rewards(SCORES, "mean_minus_std") - 1.0) / 2.0
    assert rewards == pytest.approx(expected.tolist())
    std = np.std(SCORES.numpy(), axis=0)
    assert logged[ENSEMBLE_STD_KEY] == pytest.approx(std.mean()) and logged[ENSEMBLE_MEAN_KEY] == pytest.approx(1.0)
    completions = ["a", "b"]
    scorer(["p", "q"], completions)
    assert scorer.ensemble_std(["p", "q"], completions) == pytest.approx(std.tolist())  # the cached scores
    assert scorer.models == [model]  # one distinct model, for the frozen check


def test_saved_ensemble_round_trips_and_bootstrap_is_reproducible(tmp_path):
    members = []
    for k in range(2):
        (tmp_path / f"member-{k}" / "model").mkdir(parents=True)
        (tmp_path / f"member-{k}" / "model" / "config.json").write_text("{}")
        members.append(EnsembleMember(tmp_path / f"member-{k}" / "model", None, 0.1 * k, 1.0 + k))
    write_ensemble(tmp_path / "model", members, base_model="sft")
    spec = json.loads((tmp_path / "model" / ENSEMBLE_FILE).read_text())
    assert spec["members"][1]["model_dir"] == "../member-1/model"  # relative: the run folder can move
    back = read_ensemble(tmp_path / "model")
    assert [(m.model_dir, m.mean, m.std) for m in back] == [(m.model_dir.resolve(), m.mean, m.std) for m in members]
    assert read_ensemble(tmp_path / "member-0" / "model") is None  # one model
    rows = [{"i": i} for i in range(50)]
    assert bootstrap(rows, 3) == bootstrap(rows, 3) != bootstrap(rows, 4)
    assert len(bootstrap(rows, 3)) == 50 and len({r["i"] for r in bootstrap(rows, 3)}) < 50


def test_evaluate_ensemble_reports_members_and_disagreement(nano_model):
    from rlhfkit import lab
    from rlhfkit.models.loading import load_reward_model
    from rlhfkit.models.scoring import RewardModelScorer

    torch.manual_seed(0)
    scorers = []
    for _ in range(3):  # three random score heads on one body: members that disagree
        model, tokenizer = load_reward_model(nano_model)
        scorers.append(RewardModelScorer(model, tokenizer, mean=0.0, std=1.0))
    rows = lab.comparison_dataset(40, lab.LabelerPool(1, noise=0.0), seed=3)
    pairs = [{"prompt": r["prompt"], "chosen": r["response_a"], "rejected": r["response_b"]} for r in rows]
    scorer = EnsembleScorer(scorers)
    report = evaluate_ensemble(scorer, pairs)
    assert len(report.members) == 3 and report.ensemble.n_pairs == 40
    # by hand: the members' standardised scores of chosen and rejected through the RL scoring path
    prompts = [p["prompt"] for p in pairs]
    zc, zr = (
        scorer.member_scores(prompts, [p["chosen"] for p in pairs]),
        scorer.member_scores(prompts, [p["rejected"] for p in pairs]),
    )
    assert report.ensemble.accuracy == pytest.approx(float((zc.mean(0) > zr.mean(0)).float().mean()))
    assert [m.accuracy for m in report.members] == pytest.approx((zc > zr).float().mean(1).tolist())
    split = ((zc > zr).all(0) | (zc < zr).all(0)).logical_not().float().mean()
    d = report.disagreement
    assert d["split_pairs"] == pytest.approx(float(split)) and 0 < d["split_pairs"] < 1
    assert d["member_std_mean"] == pytest.approx(float(torch.cat([zc, zr], 1).std(0, correction=0).mean()), rel=1e-4)

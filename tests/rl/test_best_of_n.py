"""Best-of-N: the analytic KL, the unbiased best-of-N estimator against brute force, the curve, and rejection-sampling
fine-tuning rounds (files, selection, resume)."""

import itertools
import math
import os

import numpy as np
import pytest

from rlhfkit import lab
from rlhfkit.core.errors import ConfigError
from rlhfkit.core.io import read_jsonl
from rlhfkit.models.sampling import load_for_sampling
from rlhfkit.models.scoring import load_scorer
from rlhfkit.rl.best_of_n import (
    analytic_kl,
    best_of_n_curve,
    curve_from_scores,
    expected_best_of_n,
    run_best_of_n,
    where_gold_stops,
)
from rlhfkit.rl.configs import best_of_n_config
from tests.conftest import REPO


def test_analytic_kl():
    assert analytic_kl(1) == 0.0
    assert analytic_kl(2) == pytest.approx(math.log(2) - 0.5)
    assert analytic_kl(16) == pytest.approx(2.7725887 - 0.9375)
    with pytest.raises(ConfigError, match="N >= 1"):
        analytic_kl(0)


def _brute_force(proxy_row, gold_row, n):
    """Mean proxy and gold of the proxy's pick over every n-subset (ties: the later sample, as documented)."""
    picks = []
    for subset in itertools.combinations(range(len(proxy_row)), n):
        best = max(subset, key=lambda i: (proxy_row[i], i))
        picks.append((proxy_row[best], gold_row[best]))
    return np.mean(picks, axis=0)


def test_expected_best_of_n_equals_brute_force_over_all_subsets():
    rng = np.random.default_rng(0)
    proxy = rng.normal(size=(5, 7)).round(1)  # rounding makes ties
    proxy[0, :3] = 0.5
    gold = rng.normal(size=(5, 7))
    ns = [1, 2, 3, 5, 7]
    got = expected_best_of_n(proxy, {"gold": gold}, ns)
    for p in range(5):
        for j, n in enumerate(ns):
            want_proxy, want_gold = _brute_force(proxy[p], gold[p], n)
            assert got["proxy"][p, j] == pytest.approx(want_proxy)
            assert got["gold"][p, j] == pytest.approx(want_gold)
    np.testing.assert_allclose(got["proxy"][:, 0], proxy.mean(axis=1))  # N = 1: any sample
    np.testing.assert_allclose(got["proxy"][:, -1], proxy.max(axis=1))  # N = M: the best one
    with pytest.raises(ConfigError, match="N=8 needs 1 <= N <= 7"):
        expected_best_of_n(proxy, {}, [8])


def test_curve_is_monotone_in_the_proxy_and_says_where_gold_stops():
    rng = np.random.default_rng(1)
    proxy = rng.normal(size=(400, 16))
    # gold follows the proxy up to ~1.0, then falls: the reward model over-rates its top answers
    gold = np.where(proxy < 1.0, proxy, 2.0 - 1.5 * proxy) + 0.1 * rng.normal(size=proxy.shape)
    curve = curve_from_scores(proxy, [1, 2, 4, 8, 16], gold)
    assert [r["n"] for r in curve.rows] == [1, 2, 4, 8, 16]
    assert all(a["proxy"] <= b["proxy"] for a, b in zip(curve.rows, curve.rows[1:]))
    stops = where_gold_stops(curve)
    assert stops["proxy_monotone"] and stops["stops_at"] == stops["gold_peak_n"] < 16
    assert stops["drop_at_largest_n"] > 2 * stops["drop_sem"]
    follows = where_gold_stops(curve_from_scores(proxy, [1, 2, 4, 8, 16], proxy + 0.1 * rng.normal(size=proxy.shape)))
    assert follows["stops_at"] is None and follows["gold_peak_n"] == 16
    assert curve.to_dict()["gold_stops"] == stops


def test_best_of_n_curve_samples_scores_and_estimates(nano_model):
    model, tokenizer = load_for_sampling(nano_model)
    rm, rm_tokenizer = load_scorer(str(nano_model))  # any sequence-classification checkpoint: a new score head
    prompts = lab.make_prompts(12, seed=3)
    curve = best_of_n_curve(model, tokenizer, rm, rm_tokenizer, prompts, ns=[4, 1, 2], max_new_tokens=8,
                            metric_fn=lab.lab_gold)  # fmt: skip
    assert [r["n"] for r in curve.rows] == [1, 2, 4]
    assert curve.per_prompt["proxy"].shape == (12, 3) and curve.per_prompt["gold"].shape == (12, 3)
    assert curve.rows[0]["kl"] == 0.0 and curve.rows[2]["kl"] == pytest.approx(analytic_kl(4))
    assert curve.rows[0]["proxy"] <= curve.rows[1]["proxy"] <= curve.rows[2]["proxy"]


def test_rejection_sampling_rounds_select_train_log_and_resume(nano_model, tmp_path):
    config = best_of_n_config(
        tmp_path / "bon",
        rounds=2,
        num_samples=4,
        prompts_per_round=6,
        max_completion_length=8,
        max_steps=2,
        per_device_train_batch_size=4,
        learning_rate=1e-3,
        logging_steps=1,
        report_to=[],
        disable_tqdm=True,
    )
    prompts = lab.make_prompts(10, seed=0)
    result = run_best_of_n(nano_model, prompts, config, reward_model=nano_model, metric_funcs=[lab.lab_gold])
    rounds = [tmp_path / "bon" / f"round-{r}" for r in (1, 2)]
    for round_dir in rounds:
        rows = read_jsonl(round_dir / "samples.jsonl")
        assert len(rows) == 6 * 4 and sum(row["kept"] for row in rows) == 6  # one kept per prompt
        for i in range(0, 24, 4):
            group = rows[i : i + 4]
            assert len({row["prompt"] for row in group}) == 1
            assert max(group, key=lambda row: row["score"])["kept"]
            assert all("lab_gold" in row for row in group)
        assert (round_dir / "model" / "model.safetensors").exists() and not list(round_dir.glob("checkpoint-*"))
    second = [row["prompt"] for row in read_jsonl(rounds[1] / "samples.jsonl")][::4]
    assert second == [prompts[(6 + j) % 10] for j in range(6)]  # round 2 takes the next slice, wrapping around
    final = result.model_dir / "model.safetensors"
    assert os.path.samefile(final, rounds[1] / "model" / "model.safetensors")  # hard links, no copy
    assert [h["step"] for h in result.log_history] == [0, 1, 2]
    assert result.log_history[0]["kl_per_sequence"] == 0.0 and result.log_history[2]["kl_per_sequence"] != 0.0
    assert result.metrics["rounds_done"] == 2 and (tmp_path / "bon" / "health.jsonl").exists()

    before = {p: p.stat().st_mtime_ns for p in tmp_path.rglob("round-*/model/*")}
    again = run_best_of_n(nano_model, prompts, config, reward_model=nano_model, metric_funcs=[lab.lab_gold])
    assert {p: p.stat().st_mtime_ns for p in tmp_path.rglob("round-*/model/*")} == before  # nothing retrained
    assert again.log_history == result.log_history  # the same samples: round 3's measure the final policy
    assert not (tmp_path / "bon" / "round-3" / "model").exists()


def test_config_errors_name_the_field(tmp_path):
    with pytest.raises(ConfigError, match="rounds=0: must be >= 1"):
        best_of_n_config(tmp_path, rounds=0)
    with pytest.raises(ConfigError, match="prompts_per_round=0"):
        best_of_n_config(tmp_path, prompts_per_round=0)


def test_best_of_n_recipe_runs_on_the_lab(nano_model, tmp_path):
    import importlib.util
    import sys

    from rlhfkit.core.arguments import parse_recipe
    from rlhfkit.monitors import MonitorConfig

    path = REPO / "recipes" / "best_of_n.py"
    spec = importlib.util.spec_from_file_location("best_of_n_recipe", path)
    recipe = importlib.util.module_from_spec(spec)
    sys.modules["best_of_n_recipe"] = recipe  # Trainer pickles the config into each checkpoint
    spec.loader.exec_module(recipe)
    types = (recipe.ModelArguments, recipe.DataArguments, recipe.SelectorArguments, MonitorConfig)
    types += (recipe.BestOfNConfig,)
    argv = ["--config", str(REPO / "configs" / "lab" / "best_of_n.yaml"), "--model_name_or_path",
            str(nano_model), "--reward_model_path", str(nano_model), "--output_dir", str(tmp_path / "out"),
            "--rounds", "1", "--prompts_per_round", "8", "--num_samples", "2", "--max_steps", "1"]  # fmt: skip
    metrics = recipe.main(*parse_recipe("best_of_n", types, argv))
    assert metrics["rounds_done"] == 1 and (tmp_path / "out" / "model" / "model.safetensors").exists()


def test_a_stop_returns_the_last_healthy_round(nano_model, tmp_path):
    """The rounds' logs are kept (``round-<r>/stats.jsonl``), so a rerun replays them: make the policy after 2 rounds
    (its log: round-3's samples) look far from the SFT model, and the stop returns the policy after 1 round; make the
    policy after 1 round look far, and it returns the SFT model."""
    import json

    from rlhfkit.monitors import MonitorConfig

    config = best_of_n_config(
        tmp_path / "bon", rounds=2, num_samples=2, prompts_per_round=4, max_completion_length=6, max_steps=1,
        per_device_train_batch_size=4, report_to=[], disable_tqdm=True,
    )  # fmt: skip
    prompts = lab.make_prompts(8, seed=0)
    run_best_of_n(nano_model, prompts, config, reward_model=nano_model)
    quiet = {f: "off" for f in MonitorConfig.__dataclass_fields__ if f.endswith("_action") and f != "kl_limit_action"}
    monitors = MonitorConfig(alert_patience=1, smoothing_steps=1, health_plots=False, **quiet)

    def far(round_log: str) -> None:  # the policy behind this log drifted: 10 nats per token
        path = tmp_path / "bon" / round_log / "stats.jsonl"
        stats = json.loads(path.read_text())
        path.write_text(json.dumps({**stats, "kl": 10.0, "kl_per_sequence": 10.0 * stats["completions/mean_length"]}))

    far("round-3")  # step 2: the policy after 2 rounds
    result = run_best_of_n(nano_model, prompts, config, reward_model=nano_model, monitor_config=monitors)
    m = result.metrics
    assert (m["stop_step"], m["last_healthy_step"], m["returned_step"]) == (2, 1, 1)
    assert "kl_limit stopped training at step 2" in m["returned_reason"]
    assert "returns round-1/model, the newest checkpoint at or before the last healthy step 1" in m["returned_reason"]
    round1 = tmp_path / "bon" / "round-1" / "model" / "model.safetensors"
    assert os.path.samefile(result.model_dir / "model.safetensors", round1)

    far("round-2")  # step 1: the policy after 1 round
    result = run_best_of_n(nano_model, prompts, config, reward_model=nano_model, monitor_config=monitors)
    m = result.metrics
    assert (m["stop_step"], m["last_healthy_step"], m["returned_step"]) == (1, 0, 0)
    assert "returns the starting policy (step 0)" in m["returned_reason"]
    assert os.path.samefile(result.model_dir / "model.safetensors", os.path.join(nano_model, "model.safetensors"))


def test_a_reference_apart_from_the_start_is_what_kl_is_measured_to(nano_model, tmp_path):
    """A round of iterative RLHF: the first round samples the start policy and measures KL to the SFT model."""
    from rlhfkit.lab import build_tiny_model

    other = build_tiny_model(tmp_path / "other", size="nano", seed=1)
    kw = {"rounds": 1, "num_samples": 2, "prompts_per_round": 4, "max_completion_length": 6, "max_steps": 1,
          "per_device_train_batch_size": 4, "report_to": [], "disable_tqdm": True}  # fmt: skip
    prompts = lab.make_prompts(8, seed=0)
    same = run_best_of_n(nano_model, prompts, best_of_n_config(tmp_path / "same", **kw), reward_model=nano_model)
    apart = run_best_of_n(
        nano_model, prompts, best_of_n_config(tmp_path / "apart", **kw), reward_model=nano_model, reference_model=other
    )
    assert same.log_history[0]["kl_per_sequence"] == 0  # step 0: the start policy, measured to itself
    assert apart.log_history[0]["kl_per_sequence"] > 0.01  # to the reference: two random nano models apart

"""DPO: pairs tokenized as DPOTrainer tokenizes them, the implicit reward against a hand computation and against
TRL's own logged rewards, the run (monitors, sampled KL, merged save, LoRA reference) and its config."""

import json

import numpy as np
import pytest
import torch
from datasets import Dataset

from rlhfkit import lab
from rlhfkit.core.errors import ConfigError, DataError
from rlhfkit.core.io import read_jsonl
from rlhfkit.models.loading import load_policy
from rlhfkit.monitors import read_metrics
from rlhfkit.rl.configs import dpo_config
from rlhfkit.rl.dpo import DPOTrainer, dpo_tokenize, evaluate_implicit_reward, implicit_rewards, run_dpo
from tests.conftest import REPO

BASE = {"report_to": [], "disable_tqdm": True, "seed": 0, "gradient_checkpointing": False, "save_steps": 10_000}


def _pairs(n: int, seed: int = 0, chat: bool = False) -> list[dict]:
    rows = []
    for r in lab.comparison_dataset(n, lab.LabelerPool(1, noise=0.0), seed=seed):
        better = r["gold_a"] >= r["gold_b"]
        chosen, rejected = (r["response_a"], r["response_b"]) if better else (r["response_b"], r["response_a"])
        if chat:
            rows.append({"prompt": [{"role": "user", "content": r["prompt"][3:-3]}],
                         "chosen": [{"role": "assistant", "content": chosen.strip()}],
                         "rejected": [{"role": "assistant", "content": rejected.strip()}]})  # fmt: skip
        else:
            rows.append({"prompt": r["prompt"], "chosen": chosen, "rejected": rejected})
    return rows


def _with_bos(tokenizer):
    from tokenizers import processors

    bos = tokenizer.eos_token
    tokenizer._tokenizer.post_processor = processors.TemplateProcessing(
        single=f"{bos} $A", special_tokens=[(bos, tokenizer.eos_token_id)]
    )
    return tokenizer


def _hand_logprob(model, prompt_ids, response_ids) -> float:
    ids = torch.tensor([prompt_ids + response_ids])
    with torch.no_grad():
        logp = torch.log_softmax(model(input_ids=ids).logits[0].double(), -1)
    return sum(logp[len(prompt_ids) + t - 1, tok].item() for t, tok in enumerate(response_ids))


@pytest.fixture(scope="module")
def models(nano_model):
    """The nano model as reference and a perturbed copy as the policy."""
    reference, tokenizer = load_policy(nano_model)
    policy, _ = load_policy(nano_model)
    torch.manual_seed(0)
    with torch.no_grad():
        for p in policy.parameters():
            p.add_(0.05 * torch.randn_like(p))
    return policy.eval(), reference.eval(), tokenizer


@pytest.mark.parametrize("case", ["text", "text+bos", "chat"])
def test_pairs_are_tokenized_as_dpo_trainer_tokenizes_them(nano_model, tmp_path, case):
    model, tokenizer = load_policy(nano_model)
    if case == "text+bos":
        tokenizer = _with_bos(tokenizer)
    pairs = _pairs(6, chat=case == "chat")
    config = dpo_config(tmp_path, max_steps=1, kl_samples=0, **BASE)
    trainer = DPOTrainer(model=model, args=config, train_dataset=Dataset.from_list(pairs), processing_class=tokenizer)
    prepared = trainer.train_dataset
    for i, pair in enumerate(pairs):
        assert dpo_tokenize(tokenizer, pair) == (
            prepared[i]["prompt_ids"], prepared[i]["chosen_ids"], prepared[i]["rejected_ids"]
        )  # fmt: skip


def test_implicit_reward_equals_a_hand_computation(models):
    policy, reference, tokenizer = models
    pairs = _pairs(8, seed=3)
    r_chosen, r_rejected, kept = implicit_rewards(policy, reference, tokenizer, pairs, beta=0.1, batch_size=3)
    assert kept == list(range(8))
    for i, pair in enumerate(pairs):
        p, c, r = dpo_tokenize(tokenizer, pair)
        want_c = 0.1 * (_hand_logprob(policy, p, c) - _hand_logprob(reference, p, c))
        want_r = 0.1 * (_hand_logprob(policy, p, r) - _hand_logprob(reference, p, r))
        assert r_chosen[i] == pytest.approx(want_c, abs=1e-5) and r_rejected[i] == pytest.approx(want_r, abs=1e-5)
    # truncated as DPOTrainer truncates (keep the start); a prompt that fills max_length drops the pair
    p, c, _ = dpo_tokenize(tokenizer, pairs[0])
    short_c, _, kept = implicit_rewards(policy, reference, tokenizer, pairs[:1], beta=0.1, max_length=len(p) + 2)
    want = 0.1 * (_hand_logprob(policy, p, c[:2]) - _hand_logprob(reference, p, c[:2]))
    assert short_c[0] == pytest.approx(want, abs=1e-5)
    with pytest.raises(DataError, match=f"max_length={len(p)} tokens or more"):
        implicit_rewards(policy, reference, tokenizer, pairs[:1], beta=0.1, max_length=len(p))
    with pytest.raises(ConfigError, match="beta=0"):
        implicit_rewards(policy, reference, tokenizer, pairs, beta=0.0)


def test_implicit_reward_matches_trl_logged_rewards(models, tmp_path):
    """TRL's own evaluation of the same pairs in one batch logs the mean implicit rewards and their accuracy."""
    policy, reference, tokenizer = models
    pairs = _pairs(10, seed=5)
    config = dpo_config(tmp_path, beta=0.3, per_device_eval_batch_size=10, kl_samples=0, **BASE)
    trainer = DPOTrainer(model=policy, ref_model=reference, args=config, train_dataset=Dataset.from_list(pairs),
                         processing_class=tokenizer)  # fmt: skip
    logged = trainer.evaluate(Dataset.from_list(pairs))
    r_chosen, r_rejected, _ = implicit_rewards(policy, reference, tokenizer, pairs, beta=0.3)
    assert logged["eval_rewards/chosen"] == pytest.approx(r_chosen.mean(), abs=1e-4)
    assert logged["eval_rewards/rejected"] == pytest.approx(r_rejected.mean(), abs=1e-4)
    assert logged["eval_rewards/accuracies"] == pytest.approx(np.mean(r_chosen > r_rejected))


def test_implicit_reward_report_is_the_reward_model_report(nano_model, tmp_path, models):
    policy, _, tokenizer = models
    policy.save_pretrained(tmp_path / "policy")
    tokenizer.save_pretrained(tmp_path / "policy")
    pairs = _pairs(40, seed=7)
    report = evaluate_implicit_reward(tmp_path / "policy", nano_model, pairs, beta=0.1)
    r_chosen, r_rejected, _ = implicit_rewards(*models, pairs, beta=0.1)
    assert report.n_pairs == 40 and report.accuracy == pytest.approx(np.mean(r_chosen > r_rejected))
    assert report.margin_mean == pytest.approx(np.mean(r_chosen - r_rejected), abs=1e-6)
    assert report.length_spearman is not None and 0.0 <= report.auc <= 1.0


@pytest.mark.parametrize("preset", ["full", "lora"])
def test_run_dpo_logs_sampled_kl_and_monitors_and_saves_merged(nano_model, tmp_path, preset):
    config = dpo_config(tmp_path / "dpo", preset=preset, max_steps=4, per_device_train_batch_size=8, logging_steps=2,
                        learning_rate=5e-3, beta=0.1, kl_samples=8, kl_max_new_tokens=8, **BASE)  # fmt: skip
    result = run_dpo(nano_model, _pairs(32), config, eval_dataset=_pairs(8, seed=1), preset=preset)
    logs = [row for row in result.log_history if "loss" in row]
    assert [row["step"] for row in logs] == [2, 4]
    for row in logs:
        metrics = read_metrics(row)
        assert metrics["stage"] == "dpo" and {"kl", "reward", "length", "entropy", "truncation"} <= set(metrics)
        assert row["logratios/chosen"] == pytest.approx(row["rewards/chosen"] / 0.1)
    assert logs[-1]["objective/kl"] > 0  # the policy moved; the KL is measured on its own samples
    timeline = read_jsonl(tmp_path / "dpo" / "health.jsonl")
    assert [r["stage"] for r in timeline] == ["dpo", "dpo"] and "logps/chosen" in timeline[0]
    assert "eval_rewards/accuracies_before" in result.metrics
    assert result.metrics["monitor_alerts"] == sum(len(r["alerts"]) for r in timeline)  # every alert of the timeline
    assert (result.model_dir / "model.safetensors").exists()
    assert (tmp_path / "dpo" / "adapter").is_dir() == (preset == "lora")  # LoRA: adapter kept, model/ merged


def test_config_errors(tmp_path, cpu_only):
    with pytest.raises(ConfigError, match="kl_samples=-1"):
        dpo_config(tmp_path, kl_samples=-1)
    assert dpo_config(tmp_path).bf16 is False  # precision from the hardware, never TRL's bf16 default on a CPU


def test_dpo_recipe_runs_on_the_lab(nano_model, tmp_path):
    import importlib.util
    import sys

    from rlhfkit.core.arguments import parse_recipe
    from rlhfkit.monitors import MonitorConfig

    spec = importlib.util.spec_from_file_location("dpo_recipe", REPO / "recipes" / "dpo.py")
    recipe = importlib.util.module_from_spec(spec)
    sys.modules["dpo_recipe"] = recipe  # Trainer pickles the config into each checkpoint
    spec.loader.exec_module(recipe)
    types = (recipe.ModelArguments, recipe.DataArguments, recipe.PairArguments, MonitorConfig, recipe.DPOConfig)
    argv = ["--config", str(REPO / "configs" / "lab" / "dpo.yaml"), "--model_name_or_path",
            str(nano_model), "--output_dir", str(tmp_path / "out"), "--max_steps", "2", "--lab_samples", "200",
            "--kl_samples", "4", "--logging_steps", "1"]  # fmt: skip
    metrics = recipe.main(*parse_recipe("dpo", types, argv))
    timeline = read_jsonl(tmp_path / "out" / "health.jsonl")
    assert metrics["monitor_alerts"] == sum(len(r["alerts"]) for r in timeline)  # the monitors of the lab config ran
    assert (tmp_path / "out" / "model" / "model.safetensors").exists()
    report = json.loads((tmp_path / "out" / "implicit_reward" / "report.json").read_text())
    assert report["n_pairs"] > 0 and 0.0 <= report["accuracy"] <= 1.0

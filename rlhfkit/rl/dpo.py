"""DPO as an alternative to RL: TRL's ``DPOTrainer`` on the reward stage's preference pairs, from the SFT model.

DPO (Rafailov et al. 2023) fits the policy directly to the preference pairs: its loss is the reward model's
Bradley-Terry loss with the reward replaced by the *implicit reward* ``beta * log(pi(y|x) / pi_ref(y|x))``, the
reference being the SFT model (with LoRA: the policy with its adapter disabled, so no second copy is loaded). No
reward model, no sampling during training. rlhfkit adds what the RL stages have:

* :class:`DPOTrainer` (its config, :class:`rlhfkit.rl.configs.DPOConfig`, adds ``kl_samples`` / ``kl_max_new_tokens``):
  at every log it samples the policy on a fixed set of training prompts and logs ``objective/kl`` -- KL(policy ||
  reference) in nats per sequence on the policy's own samples (:func:`rlhfkit.models.sampling.sequence_kl`, PPO's
  quantity and scale) -- with the samples' ``completions/mean_length`` and ``completions/clipped_ratio``, and
  ``logratios/chosen`` / ``logratios/rejected`` (the chosen / rejected log-ratio drift, nats per sequence: TRL's
  ``rewards/*`` over beta). DPO's own logs only hold log-ratios on the *data*, which say how the pairs' likelihood
  moved, not how far the policy's outputs moved; the monitors (:func:`rlhfkit.monitors.read_metrics`) read the sampled
  KL, the reward margins (``rewards/margins``), the entropy, the length and the truncation share.
* :func:`implicit_rewards` / :func:`evaluate_implicit_reward`: the implicit reward of held-out pairs, reported by
  :func:`rlhfkit.reward.evaluate.report_from_scores` exactly like a reward model (accuracy, AUC, calibration, length
  bias). Pairs are tokenized as ``DPOTrainer`` tokenizes them (:func:`dpo_tokenize`): EOS appended to text responses,
  the prompt's tokens the common prefix of prompt and prompt + response, truncation to ``max_length`` keeping the
  start.

The run itself is :func:`run_dpo` (merged final save, resume, monitors).
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Sequence

import numpy as np
import trl

from rlhfkit.core.errors import ConfigError, DataError
from rlhfkit.core.presets import method_preset
from rlhfkit.models.loading import load_policy
from rlhfkit.models.sampling import generate_ids, load_for_sampling, sequence_kl, sequence_logprobs
from rlhfkit.monitors.config import MonitorConfig
from rlhfkit.reward.evaluate import RewardModelReport, report_from_scores, response_length
from rlhfkit.rl.healthy import load_start_policy, train_monitored
from rlhfkit.runs import RunResult, as_dataset


# ------------------------------------------------------------------------------------------ the implicit reward
def dpo_tokenize(tokenizer, pair: dict) -> tuple[list[int], list[int], list[int]]:
    """``(prompt_ids, chosen_ids, rejected_ids)`` of a pair, as ``DPOTrainer._prepare_dataset`` builds them.

    Text: EOS appended to each response unless present, ``tokenizer(prompt)`` and ``tokenizer(prompt + response)``
    (the tokenizer's special tokens included). Chat messages: the chat template of the prompt (with the generation
    prompt) and of prompt + response (with the row's ``tools`` / ``chat_template_kwargs``). The response starts
    where the prompt's tokens and prompt + response's diverge (a template may render the prompt alone differently).
    """
    prompt, chosen, rejected = pair["prompt"], pair["chosen"], pair["rejected"]
    if isinstance(prompt, str):
        eos = tokenizer.eos_token
        chosen, rejected = (r if r.endswith(eos) else r + eos for r in (chosen, rejected))
        prompt_ids = tokenizer(prompt)["input_ids"]
        full = [tokenizer(prompt + r)["input_ids"] for r in (chosen, rejected)]
    else:
        tools = pair.get("tools")
        kwargs = {
            "tools": json.loads(tools) if isinstance(tools, str) else tools,
            **(pair.get("chat_template_kwargs") or {}),
        }

        def ids(messages, **extra) -> list[int]:
            out = tokenizer.apply_chat_template(messages, tokenize=True, return_dict=True, **kwargs, **extra)
            return list(out["input_ids"])

        prompt_ids = ids(prompt, add_generation_prompt=True)
        full = [ids(prompt + r) for r in (chosen, rejected)]
    n = min(_common_prefix(prompt_ids, f) for f in full)
    return list(prompt_ids[:n]), list(full[0][n:]), list(full[1][n:])


def _common_prefix(a: Sequence[int], b: Sequence[int]) -> int:
    n = 0
    for x, y in zip(a, b):
        if x != y:
            break
        n += 1
    return n


def implicit_rewards(
    policy,
    reference,
    tokenizer,
    pairs: Sequence[dict],
    *,
    beta: float,
    max_length: int | None = None,
    batch_size: int = 16,
) -> tuple[np.ndarray, np.ndarray, list[int]]:
    """DPO's implicit reward ``beta * (log pi(y|x) - log pi_ref(y|x))`` of each pair's chosen and rejected response.

    Sequences longer than ``max_length`` keep their start, as ``DPOTrainer``'s collator truncates them; pairs whose
    prompt alone fills ``max_length`` are skipped (``DPOTrainer`` drops them). Returns ``(r_chosen, r_rejected,
    kept)``: two float64 arrays over the kept pairs and their indices in ``pairs``.
    """
    if beta <= 0:
        raise ConfigError(f"beta={beta} must be > 0 (the implicit reward is beta times the log-ratio)")
    prompts, chosen, rejected, kept = [], [], [], []
    for i, pair in enumerate(pairs):
        missing = [k for k in ("prompt", "chosen", "rejected") if k not in pair]
        if missing:
            raise DataError(
                f"pair {i}: missing {', '.join(missing)}; give explicit-prompt pairs (prompt/chosen/rejected)"
            )
        p, c, r = dpo_tokenize(tokenizer, pair)
        if max_length is not None:
            if len(p) >= max_length:
                continue
            c, r = c[: max_length - len(p)], r[: max_length - len(p)]
        prompts.append(p)
        chosen.append(c)
        rejected.append(r)
        kept.append(i)
    if not kept:
        raise DataError(f"all {len(pairs)} pairs have prompts of max_length={max_length} tokens or more; raise it")
    ids = (prompts + prompts, chosen + rejected)
    ratio = sequence_logprobs(policy, *ids, batch_size=batch_size) - sequence_logprobs(
        reference, *ids, batch_size=batch_size
    )
    n = len(kept)
    return beta * ratio[:n], beta * ratio[n:], kept


def evaluate_implicit_reward(
    policy_dir: str | os.PathLike,
    reference_dir: str | os.PathLike,
    pairs: Sequence[dict],
    *,
    beta: float,
    max_length: int | None = None,
    preset="full",
    batch_size: int = 16,
) -> RewardModelReport:
    """The reward-model report (:func:`~rlhfkit.reward.evaluate.report_from_scores`) of a DPO policy's implicit reward
    on held-out ``pairs``; ``reference_dir`` is the SFT model DPO started from (both loaded as ``preset`` loads
    them)."""
    policy, tokenizer = load_for_sampling(policy_dir, preset)
    reference, _ = load_for_sampling(reference_dir, preset)
    pairs = list(pairs)
    r_chosen, r_rejected, kept = implicit_rewards(
        policy, reference, tokenizer, pairs, beta=beta, max_length=max_length, batch_size=batch_size
    )
    rows = [pairs[i] for i in kept]
    return report_from_scores(
        r_chosen,
        r_rejected,
        chosen_lengths=[response_length(r["chosen"]) for r in rows],
        rejected_lengths=[response_length(r["rejected"]) for r in rows],
        pairs=rows,
        n_dropped=len(pairs) - len(kept),
    )


# ----------------------------------------------------------------------------- DPO
class DPOTrainer(trl.DPOTrainer):
    """TRL's ``DPOTrainer`` that also logs KL(policy || reference) on policy samples and the log-ratio drift.

    Every training log (each ``logging_steps``) samples the policy at temperature 1 on the first
    ``args.kl_samples`` training prompts (the same prompts and seed each time, so the series is comparable) and
    measures the KL with :func:`rlhfkit.models.sampling.sequence_kl`; every process computes the same number.
    """

    def log(self, logs: dict[str, float], start_time: float | None = None) -> None:
        mode = "train" if self.model.training else "eval"
        prefix = "" if mode == "train" else "eval_"
        for side in ("chosen", "rejected"):
            values = self._metrics[mode].get(f"rewards/{side}")
            if values:
                logs[f"{prefix}logratios/{side}"] = sum(values) / len(values) / self.beta
        if mode == "train" and "loss" in logs and self.args.kl_samples:
            logs.update(self._sampled_kl())
        super().log(logs, start_time)

    def _sampled_kl(self) -> dict[str, float]:
        from trl.trainer.utils import use_adapter

        tokenizer = self.processing_class
        prompts = self.train_dataset.select(range(min(self.args.kl_samples, len(self.train_dataset))))["prompt_ids"]
        policy = self.accelerator.unwrap_model(self.model)
        samples = generate_ids(
            policy,
            prompts,
            pad_token_id=tokenizer.pad_token_id,
            eos_token_id=tokenizer.eos_token_id,
            max_new_tokens=self.args.kl_max_new_tokens,
            seed=self.args.seed,
        )
        if self.ref_model is not None:
            kl = sequence_kl(policy, self.accelerator.unwrap_model(self.ref_model), samples).mean
        else:  # LoRA: the reference is the policy with its adapter disabled
            logp = sequence_logprobs(policy, samples.prompt_ids, samples.response_ids)
            with use_adapter(policy, adapter_name=None):
                logp_ref = sequence_logprobs(policy, samples.prompt_ids, samples.response_ids)
            kl = float(np.mean(logp - logp_ref))
        return {
            "objective/kl": kl,
            "completions/mean_length": samples.mean_length(),
            "completions/clipped_ratio": 1.0 - float(np.mean(samples.finished)),
        }


# ------------------------------------------------------------------------------------------ DPO
# DPO's logged series the monitors keep in their timeline beside the signals they read (chosen/rejected drift).
DPO_HEALTH_KEYS = ("logratios/chosen", "logratios/rejected", "logps/chosen", "logps/rejected", "rewards/accuracies")


def dpo_monitor_config(monitor_config: MonitorConfig | None = None) -> MonitorConfig:
    """``monitor_config`` (default: ``MonitorConfig()``) with :data:`DPO_HEALTH_KEYS` kept in the health timeline."""
    monitor = monitor_config or MonitorConfig()
    extra = [k for k in DPO_HEALTH_KEYS if k not in monitor.health_extra_keys]
    return dataclasses.replace(monitor, health_extra_keys=[*monitor.health_extra_keys, *extra])


def run_dpo(
    model_name_or_path: str | os.PathLike,
    train_dataset,
    config,
    *,
    eval_dataset=None,
    preset="full",
    trust_remote_code: bool = False,
    callbacks: list | None = None,
    monitor_config=None,
    reference_model: str | os.PathLike | None = None,
    start_adapter: str | os.PathLike | None = None,
    start_model: str | os.PathLike | None = None,
) -> RunResult:
    """DPO on preference pairs with :class:`rlhfkit.rl.dpo.DPOTrainer` (TRL's, logging the KL on policy samples).

    Args:
        model_name_or_path: the SFT model: the policy's starting point and the reference of the implicit reward.
        train_dataset: preference pairs, ``prompt`` / ``chosen`` / ``rejected`` (text or chat messages) -- the
            pairs the reward stage trains on.
        config: a :class:`rlhfkit.rl.configs.DPOConfig` (:func:`rlhfkit.rl.configs.dpo_config`: presets, precision).
        eval_dataset: held-out pairs; DPO's loss and reward accuracy are measured before and after training.
        preset: ``full`` (the reference is a frozen copy of the SFT model, loaded as the policy is) | ``lora`` |
            ``qlora`` (the reference is the policy with its adapter disabled: one base in memory).
        callbacks: extra ``TrainerCallback``s; the monitors are always added. They read ``objective/kl`` (sampled,
            see :class:`~rlhfkit.rl.configs.DPOConfig`), the reward margins, entropy, length and truncation of the
            samples;
            :data:`DPO_HEALTH_KEYS` are kept in the timeline; the reference is checked bit-identical at the end.
        monitor_config: a :class:`rlhfkit.monitors.MonitorConfig`.
        reference_model: the reference when the policy starts elsewhere (iterative DPO: the SFT model while
            ``model_name_or_path`` is the last round's policy); preset ``full`` only.
        start_adapter, start_model: LoRA presets: a trained adapter to train further on ``model_name_or_path``, which
            stays the reference (the adapter turned off), and that policy saved (as in
            :func:`rlhfkit.rl.grpo_rloo.run_grpo`).
    Returns:
        a :class:`RunResult` whose ``model_dir`` holds the (merged) policy; ``metrics["monitor_alerts"]``.
    """

    method = method_preset(preset) if isinstance(preset, str) else preset
    cols = ("prompt", "chosen", "rejected")
    train_dataset = as_dataset(train_dataset, "train_dataset", cols)
    eval_dataset = as_dataset(eval_dataset, "eval_dataset", cols)
    model, tokenizer, peft_config = load_start_policy(
        "dpo", model_name_or_path, method, reference_model=reference_model, start_adapter=start_adapter,
        trust_remote_code=trust_remote_code,
    )  # fmt: skip
    reference = None
    if method.lora is None:  # loaded as the policy is (same tokenizer fixes and dtype), frozen
        reference, _ = load_policy(reference_model or model_name_or_path, method, trust_remote_code=trust_remote_code)
        reference.eval().requires_grad_(False)
    trainer = DPOTrainer(
        model=model,
        ref_model=reference,
        args=config,
        train_dataset=train_dataset,
        eval_dataset=eval_dataset,
        processing_class=tokenizer,
        peft_config=peft_config,
        callbacks=list(callbacks or []),
    )
    monitor = dpo_monitor_config(monitor_config)
    return train_monitored(
        trainer, tokenizer, config, "dpo", str(model_name_or_path), monitor, eval_dataset, start_model=start_model
    )

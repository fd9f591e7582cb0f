"""DPO as an alternative to RL: TRL's ``DPOTrainer`` on the reward stage's preference pairs, from the SFT model.

DPO (Rafailov et al. 2023) fits the policy directly to the preference pairs: its loss is the reward model's
Bradley-Terry loss with the reward replaced by the *implicit reward* ``beta * log(pi(y|x) / pi_ref(y|x))``, the
reference being the SFT model (with LoRA: the policy with its adapter disabled, so no second copy is loaded). No
reward model, no sampling during training. rlhfkit adds what the RL stages have:

* :class:`DPOConfig`: TRL's config plus ``kl_samples`` / ``kl_max_new_tokens``: at every log,
  :class:`rlhfkit.trainers.DPOTrainer`
  samples the policy on a fixed set of training prompts and logs ``objective/kl`` -- KL(policy || reference) in nats
  per sequence on the policy's own samples (:func:`rlhfkit.sampling.sequence_kl`, PPO's quantity and scale) -- with
  the samples' ``completions/mean_length`` and ``completions/clipped_ratio``, and ``logratios/chosen`` /
  ``logratios/rejected`` (the chosen / rejected log-ratio drift, nats per sequence: TRL's ``rewards/*`` over beta).
  DPO's own logs only hold log-ratios on the *data*, which say how the pairs' likelihood moved, not how far the
  policy's outputs moved; the monitors (:func:`rlhfkit.monitors.read_metrics`) read the sampled KL, the reward
  margins (``rewards/margins``), the entropy, the length and the truncation share.
* :func:`implicit_rewards` / :func:`evaluate_implicit_reward`: the implicit reward of held-out pairs, reported by
  :func:`rlhfkit.rm_eval.report_from_scores` exactly like a reward model (accuracy, AUC, calibration, length bias).
  Pairs are tokenized as ``DPOTrainer`` tokenizes them (:func:`dpo_tokenize`): EOS appended to text responses, the
  prompt's tokens the common prefix of prompt and prompt + response, truncation to ``max_length`` keeping the start.

The run itself is :func:`rlhfkit.train.run_dpo` (merged final save, resume, monitors).
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import trl

from rlhfkit.config import trainer_config
from rlhfkit.errors import ConfigError, DataError
from rlhfkit.presets import DPO_KL_MAX_NEW_TOKENS, DPO_KL_SAMPLES
from rlhfkit.rm_eval import RewardModelReport, report_from_scores, response_length
from rlhfkit.sampling import load_for_sampling, sequence_logprobs


@dataclass
class DPOConfig(trl.DPOConfig):
    """TRL's ``DPOConfig`` plus the policy samples that measure DPO's KL to the reference for the monitors.

    Args:
        kl_samples (`int`, defaults to `32`): training prompts the policy is sampled on at every log to measure
            ``objective/kl`` (nats per sequence); 0 turns it off (the monitors' KL, length and truncation signals too).
            The default is :data:`rlhfkit.presets.DPO_KL_SAMPLES` (the planner counts its generation).
        kl_max_new_tokens (`int`, defaults to `128`): tokens sampled per response for that measurement.
    """

    kl_samples: int = field(
        default=DPO_KL_SAMPLES,
        metadata={"help": "Prompts sampled at every log to measure KL to the reference (0: off)."},
    )
    kl_max_new_tokens: int = field(
        default=DPO_KL_MAX_NEW_TOKENS, metadata={"help": "Tokens sampled per response for the KL."}
    )

    def __post_init__(self):
        super().__post_init__()
        if self.kl_samples < 0 or self.kl_max_new_tokens < 1:
            raise ConfigError(
                f"DPOConfig: kl_samples={self.kl_samples} must be >= 0 and kl_max_new_tokens={self.kl_max_new_tokens} "
                ">= 1"
            )


def dpo_config(output_dir: str | os.PathLike, *, preset="full", gpu=None, **kwargs) -> DPOConfig:
    """A :class:`DPOConfig` via :func:`rlhfkit.config.trainer_config` (precision, presets, then ``kwargs``)."""
    return trainer_config(DPOConfig, "dpo", output_dir, preset=preset, gpu=gpu, **kwargs)


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
    """The reward-model report (:func:`rlhfkit.rm_eval.report_from_scores`) of a DPO policy's implicit reward on
    held-out ``pairs``; ``reference_dir`` is the SFT model DPO started from (both loaded as ``preset`` loads them)."""
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

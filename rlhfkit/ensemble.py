"""Reward-model ensembles at scoring time: K members' standardised scores, combined into one reward.

* :func:`aggregate_rewards` -- ``mean`` | ``min`` | ``mean_minus_std`` over the members (pure tensor math);
* :class:`EnsembleScorer` -- the ensemble as a reward function (GRPO's, and PPO's external reward path): it scores
  with every member, aggregates, and logs the members' spread (``rewards/ensemble_std``) through TRL's ``log_metric``;
* :func:`evaluate_ensemble` -- each member, the ensemble and the members' disagreement on held-out pairs;
* :func:`load_reward_function` -- the reward stage's ``model/`` folder (one model or an ``ensemble.json``) as that
  reward function, loaded as RL uses it (4-bit under ``qlora``; with LoRA members, one base holding K adapters).

Every member's score is standardised, ``(score - mean_k) / std_k`` with the member's own statistics on preference
responses (:mod:`rlhfkit.reward`), so that members trained from different seeds are on one scale: the
Bradley-Terry loss fixes score differences, not offsets, and an unstandardised spread would mostly measure offsets.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from rlhfkit.errors import ConfigError
from rlhfkit.models import load_reward_model
from rlhfkit.presets import MethodPreset, method_preset
from rlhfkit.reward import read_ensemble
from rlhfkit.rm_eval import RewardModelReport, encode_pairs, pair_report
from rlhfkit.scoring import REWARD_MODEL_NAME, RewardModelScorer, resolve_pad_token_id, score_token_ids

logger = logging.getLogger(__name__)

AGGREGATIONS = ("mean", "min", "mean_minus_std")
# The members' spread and mean, logged every batch under TRL's key for a per-response quantity (rewards/<name>/mean).
ENSEMBLE_STD_KEY = "rewards/ensemble_std/mean"
ENSEMBLE_MEAN_KEY = "rewards/ensemble_mean/mean"


def check_aggregation(aggregation: str, coef: float) -> None:
    """Raise a one-line :class:`ConfigError` for an unknown aggregation or a negative coefficient."""
    if aggregation not in AGGREGATIONS:
        raise ConfigError(f"reward_aggregation={aggregation!r} must be one of {AGGREGATIONS}")
    if coef < 0:
        raise ConfigError(f"reward_ensemble_coef={coef} must be >= 0 (it scales the members' std subtracted)")


def aggregate_rewards(scores: torch.Tensor, aggregation: str = "mean", coef: float = 1.0) -> torch.Tensor:
    """One reward per response from the members' standardised scores.

    Args:
        scores: ``(K, N)``: member k's standardised score of response n.
        aggregation: ``mean`` (the members' average), ``min`` (worst case, Coste et al.'s WCO) or
            ``mean_minus_std`` (``mean - coef * std``, the population std over members: an uncertainty penalty).
        coef: the std's weight in ``mean_minus_std`` (ignored otherwise).
    Returns:
        ``(N,)`` float tensor. With one member every aggregation is that member's score.
    """
    check_aggregation(aggregation, coef)
    if scores.ndim != 2 or scores.shape[0] < 1:
        raise ConfigError(f"scores must be (members, responses), got shape {tuple(scores.shape)}")
    if aggregation == "min":
        return scores.min(0).values
    mean = scores.mean(0)
    if aggregation == "mean":
        return mean
    return mean - coef * scores.std(0, correction=0)


def ensemble_stats(scores: torch.Tensor) -> dict[str, float]:
    """Batch statistics of ``(K, N)`` standardised scores: the mean over responses of the members' std
    (:data:`ENSEMBLE_STD_KEY`) and of their mean (:data:`ENSEMBLE_MEAN_KEY`)."""
    return {
        ENSEMBLE_STD_KEY: float(scores.std(0, correction=0).mean()),
        ENSEMBLE_MEAN_KEY: float(scores.mean()),
    }


class EnsembleScorer:
    """K reward models as one reward function, TRL's signature ``f(prompts, completions, **kwargs) -> list[float]``.

    Each member is a :class:`RewardModelScorer` (scoring exactly as ``RewardTrainer`` trained it) holding its own
    standardisation (``mean`` / ``std``); members that are adapters of one peft model name their adapter, which is
    made active while they score. Each call also stores :attr:`last_scores` (``(K, N)``) and :attr:`last_stats`, and
    logs the stats through TRL GRPO's ``log_metric`` keyword when given.

    Args:
        members: one scorer per member.
        adapters: per member, the peft adapter to activate (None: the member is its own model).
        aggregation, coef: see :func:`aggregate_rewards`.
        mean, std: optional normalisation of the aggregate, ``(reward - mean) / std`` (e.g. the ensemble's score
            statistics from rm_eval), as :class:`RewardModelScorer` normalises one model's score.
    """

    def __init__(
        self,
        members: Sequence[RewardModelScorer],
        *,
        adapters: Sequence[str | None] | None = None,
        aggregation: str = "mean",
        coef: float = 1.0,
        mean: float | None = None,
        std: float | None = None,
    ):
        check_aggregation(aggregation, coef)
        if std is not None and not std > 0:
            raise ConfigError(f"reward_std={std} must be > 0; pass the ensemble's score standard deviation")
        if not members:
            raise ConfigError("EnsembleScorer needs at least one member")
        self.members = list(members)
        self.adapters = list(adapters) if adapters is not None else [None] * len(self.members)
        if len(self.adapters) != len(self.members):
            raise ConfigError(f"{len(self.adapters)} adapter names for {len(self.members)} members")
        self.aggregation, self.coef = aggregation, coef
        self.mean = 0.0 if mean is None else float(mean)
        self.std = 1.0 if std is None else float(std)
        self._last_completions: Sequence | None = None
        self.last_scores: torch.Tensor | None = None
        self.last_stats: dict[str, float] = {}
        self.__name__ = REWARD_MODEL_NAME

    @property
    def models(self) -> list:
        """The distinct member models (one peft model for adapter members), for the frozen-model check."""
        seen, out = set(), []
        for m in self.members:
            if id(m.model) not in seen:
                seen.add(id(m.model))
                out.append(m.model)
        return out

    def member_scores(self, prompts: Sequence, completions: Sequence) -> torch.Tensor:
        """``(K, N)`` standardised scores of the (prompt, completion) pairs by every member."""
        rows = []
        for member, adapter in zip(self.members, self.adapters):
            if adapter is not None:
                member.model.set_adapter(adapter)
                member.model.requires_grad_(False)  # peft's set_adapter marks the active adapter trainable
            rows.append(torch.as_tensor(member(prompts, completions), dtype=torch.float32))
        return torch.stack(rows)

    def __call__(self, prompts, completions, log_metric: Callable[[str, float], None] | None = None, **kwargs):
        scores = self.member_scores(prompts, completions)
        self.last_scores, self.last_stats, self._last_completions = scores, ensemble_stats(scores), completions
        if log_metric is not None:  # TRL GRPO: averaged over the logging interval, logged beside `reward`
            for key, value in self.last_stats.items():
                log_metric(key, value)
        reward = aggregate_rewards(scores, self.aggregation, self.coef)
        return ((reward - self.mean) / self.std).tolist()

    def ensemble_std(self, prompts, completions, **kwargs) -> list[float]:
        """Per response, the members' std of standardised scores: a metric function (PPO's ``metric_funcs`` log
        it as ``rewards/ensemble_std/mean``). Reuses the scores of the last call on the same completions."""
        if completions is not self._last_completions or self.last_scores is None:
            self.last_scores, self._last_completions = self.member_scores(prompts, completions), completions
        return self.last_scores.std(0, correction=0).tolist()


def load_reward_function(
    path: str | os.PathLike,
    preset: str | MethodPreset = "full",
    *,
    aggregation: str = "mean",
    coef: float = 1.0,
    mean: float | None = None,
    std: float | None = None,
    trust_remote_code: bool = False,
) -> RewardModelScorer | EnsembleScorer:
    """The reward stage's ``model/`` folder as an RL reward function, loaded as RL uses it.

    One model: a :class:`RewardModelScorer` (optionally normalised with ``mean`` / ``std``). An ensemble
    (``ensemble.json``): an :class:`EnsembleScorer` whose members are standardised with their own statistics (then
    ``mean`` / ``std``, the ensemble's score statistics from rm_eval, are applied to the aggregate by the caller,
    e.g. PPO's ``reward_mean`` / ``reward_std``). Members saved with LoRA adapters share one base model (4-bit under
    ``qlora``) holding one adapter + score head per member; full members are K models.
    """
    check_aggregation(aggregation, coef)
    method = method_preset(preset) if isinstance(preset, str) else preset
    rm_preset = method_preset("qlora", task_type="SEQ_CLS") if method.quantization is not None else "full"
    kw = {"trust_remote_code": trust_remote_code}
    members = read_ensemble(path)
    if members is None:
        model, tokenizer = load_reward_model(path, rm_preset, **kw)
        return RewardModelScorer(model, tokenizer, mean=mean, std=std)
    if all(m.adapter_dir is not None for m in members) and method.lora is not None:
        from peft import PeftModel

        base, tokenizer = load_reward_model(_adapter_base(members[0].adapter_dir), rm_preset, **kw)
        names = [f"member_{k}" for k in range(len(members))]
        model = PeftModel.from_pretrained(base, str(members[0].adapter_dir), adapter_name=names[0])
        for name, m in zip(names[1:], members[1:]):
            model.load_adapter(str(m.adapter_dir), adapter_name=name)
        scorers = [RewardModelScorer(model, tokenizer, mean=m.mean, std=m.std) for m in members]
        return EnsembleScorer(scorers, adapters=names, aggregation=aggregation, coef=coef, mean=mean, std=std)
    scorers = []
    for m in members:
        model, tokenizer = load_reward_model(m.model_dir, rm_preset, **kw)
        scorers.append(RewardModelScorer(model, tokenizer, mean=m.mean, std=m.std))
    return EnsembleScorer(scorers, aggregation=aggregation, coef=coef, mean=mean, std=std)


def _adapter_base(adapter_dir) -> str:
    from peft import PeftConfig

    base = PeftConfig.from_pretrained(str(adapter_dir)).base_model_name_or_path
    if not base:
        raise ConfigError(f"adapter {str(adapter_dir)!r} does not name its base model; retrain the reward stage")
    return base


def place_reward_function(fn: Any, device) -> None:
    """Move a reward function's unquantised model(s) to ``device`` (4-bit models are placed when loaded)."""
    for model in getattr(fn, "models", None) or [getattr(fn, "model", None)]:
        if model is not None and not getattr(model, "is_loaded_in_4bit", False):
            model.to(device)


@dataclass
class EnsembleReport:
    """An ensemble's evaluation on held-out pairs (:func:`evaluate_ensemble`).

    Attributes:
        ensemble: the report of the members' mean standardised score (what ``reward_aggregation: mean`` gives RL;
            its calibration is that of ``sigmoid`` of the standardised margin).
        members: one report per member, on its own raw scores.
        disagreement: ``member_std_mean`` (mean over the 2n responses of the members' std of standardised
            scores), ``split_pairs`` (share of pairs the members do not all rank the same way), and the ensemble's
            ``accuracy_agreed`` / ``accuracy_split`` on those two groups (None for an empty group).
    """

    ensemble: RewardModelReport
    members: list[RewardModelReport]
    disagreement: dict[str, float | None]

    def to_dict(self) -> dict[str, Any]:
        return {
            "disagreement": self.disagreement,
            "members": [
                {k: m.to_dict()[k] for k in ("n_pairs", "accuracy", "auc", "ece", "reward_mean", "reward_std")}
                for m in self.members
            ],
        }


def evaluate_ensemble(
    scorer: EnsembleScorer, pairs, *, max_length: int | None = None, batch_size: int = 16
) -> EnsembleReport:
    """Score held-out preference pairs with every member and report each member, the ensemble and their
    disagreement (see :class:`EnsembleReport`). Pairs as for :func:`rlhfkit.rm_eval.evaluate_reward_model`."""
    tokenizer = scorer.members[0].tokenizer
    rows, ids, n_dropped = encode_pairs(tokenizer, pairs, max_length)
    n, raw = len(rows), []
    for member, adapter in zip(scorer.members, scorer.adapters):
        if adapter is not None:
            member.model.set_adapter(adapter)
            member.model.requires_grad_(False)
        pad = resolve_pad_token_id(member.model, tokenizer)
        raw.append(score_token_ids(member.model, ids, pad_token_id=pad, batch_size=batch_size))
    scores = np.stack(raw)  # (K, 2n)
    z = (scores - np.array([[m.mean] for m in scorer.members])) / np.array([[m.std] for m in scorer.members])
    mean = aggregate_rewards(torch.from_numpy(z), "mean").numpy()
    margins = z[:, :n] - z[:, n:]  # (K, n)
    agreed = (np.sign(margins) == np.sign(margins[:1])).all(0) & (margins[0] != 0)
    correct = mean[:n] > mean[n:]
    return EnsembleReport(
        ensemble=pair_report(rows, mean[:n], mean[n:], n_dropped),
        members=[pair_report(rows, s[:n], s[n:], n_dropped) for s in scores],
        disagreement={
            "member_std_mean": float(z.std(0).mean()),
            "split_pairs": float(1 - agreed.mean()),
            "accuracy_agreed": float(correct[agreed].mean()) if agreed.any() else None,
            "accuracy_split": float(correct[~agreed].mean()) if (~agreed).any() else None,
        },
    )

"""The ``rounds`` section of the pipeline config (iterative RLHF) and what rounds r >= 2 cannot run with.

A round's stages are the manifest entries (and folders) ``round-<r>/<stage>`` of :data:`ROUND_STAGES`, run after the
pipeline's rl stage and before final_eval (:meth:`rlhfkit.pipeline.config.PipelineConfig.stages`); what they do is
:mod:`rlhfkit.pipeline.rounds`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from rlhfkit.core.errors import raise_problems
from rlhfkit.core.rules import AT_LEAST_ONE, PROBABILITY, Range, config_problems

REWARD_REFRESH = ("continue", "retrain")
ROUND_STAGES = ("comparisons", "preferences", "reward", "rm_eval", "rl")  # a round's stages, in order


@dataclass
class RoundsArguments:
    """Iterative RLHF (Llama 2's rounds, RLHFlow's online loop). Round 1 is the pipeline's own preferences, reward,
    rm_eval and rl stages; each round r >= 2 samples ``k`` answers of round r-1's policy to ``prompts_per_round``
    fresh prompts, labels them as the ``preferences`` section says, refreshes the reward model on the new pairs and a
    ``mix`` share of the old ones, evaluates and gates it, and runs RL again from round r-1's policy with the
    reference (the KL leash) still at the SFT model. ``count: 1`` is the pipeline as it is."""

    count: int = field(default=1, metadata={"help": "Rounds (1: no iteration)."})
    prompts_per_round: int = field(default=72, metadata={"help": "Fresh prompts sampled per round r >= 2."})
    k: int = field(default=4, metadata={"help": "Answers of the last policy per prompt."})
    labels_per_round: int | None = field(
        default=None,
        metadata={"help": "Label budget: pairwise comparisons labelled per round (None: every pair of every prompt)."},
    )
    reward_refresh: str = field(
        default="continue", metadata={"help": "continue (from the last reward model) | retrain (from the SFT model)."}
    )
    mix: float = field(default=0.5, metadata={"help": "Share of earlier rounds' training pairs kept."})

    RANGES: ClassVar[dict[str, Range]] = {
        "count": AT_LEAST_ONE,
        "prompts_per_round": AT_LEAST_ONE,
        "k": Range(2, example="4"),
        "labels_per_round": AT_LEAST_ONE,
        "mix": PROBABILITY,
    }

    def __post_init__(self):
        problems = config_problems(self)
        if self.reward_refresh not in REWARD_REFRESH:
            problems.append(f"reward_refresh={self.reward_refresh!r} must be one of {', '.join(REWARD_REFRESH)}")
        pairs = self.k * (self.k - 1) // 2 if isinstance(self.k, int) else 1
        if isinstance(self.labels_per_round, int) and self.labels_per_round < pairs:
            problems.append(
                f"labels_per_round={self.labels_per_round} labels no prompt: one prompt's {self.k} answers make "
                f"{pairs} pairs; set it to at least {pairs} or lower k"
            )
        raise_problems(problems)

    def round_prompts(self) -> int:
        """Prompts a round r >= 2 samples: ``prompts_per_round``, fewer when the label budget covers fewer."""
        if self.labels_per_round is None:
            return self.prompts_per_round
        return min(self.prompts_per_round, self.labels_per_round // (self.k * (self.k - 1) // 2))


def round_stage(r: int, stage: str) -> str:
    """The manifest name (and folder under the run) of round ``r``'s ``stage``: ``round-2/reward``; round 1's are the
    pipeline's own stages."""
    return stage if r == 1 else f"round-{r}/{stage}"


def round_votes(votes: str, r: int) -> str:
    """Where people's votes on round ``r``'s comparisons go: ``preferences.votes`` for round 1, beside it
    ``<name>.round-<r><suffix>`` for the others (``votes.jsonl`` -> ``votes.round-2.jsonl``): one votes file per
    comparisons file, as ``rlhfkit label`` serves one."""
    if r == 1:
        return votes
    path = Path(votes)
    return str(path.with_name(f"{path.stem}.round-{r}{path.suffix}"))


def rounds_problems(raw: dict[str, Any], sections: dict[str, Any], model, rl) -> list[str]:
    """What rounds r >= 2 cannot run with: labels only the lab, the judge or people give; PPO's policy starts apart
    from its reference (the SFT model) only in full fine-tuning with the separate layout (the other algorithms' LoRA
    rounds train round r-1's adapter further on the SFT model); a reward ensemble cannot continue from the last one."""
    prefs, data, rounds = sections["preferences"], sections["data"], sections["rounds"]
    problems = []
    if prefs.source == "data" and data.preferences != "lab":
        problems.append(
            f"rounds.count={rounds.count} labels each round's new answers, which data.preferences={data.preferences!r}"
            " cannot; set preferences.source: comparisons (lab labelers or people) or judge, or rounds.count: 1"
        )
    if rl.algorithm == "ppo" and (model.preset != "full" or rl.layout == "shared"):
        problems.append(
            f"rounds.count={rounds.count} with rl.algorithm: ppo needs model.preset: full and PPO's separate layout "
            f"(got preset {model.preset!r}, layout {rl.layout!r}): round r's policy starts from round r-1's with the "
            "SFT model as its reference, and PPO's LoRA layout shares one base with the reward adapter it trained "
            "on; use preset full, or grpo / rloo / dpo / best_of_n (their LoRA rounds train round r-1's adapter on)"
        )
    reward = raw.get("reward") if isinstance(raw.get("reward"), dict) else {}
    if rl.algorithm == "dpo" and int(reward.get("ensemble_size") or 1) > 1:
        problems.append(
            "rounds.count > 1 with rl.algorithm: dpo picks each prompt's best and worst answer with one reward model, "
            "not an ensemble; set reward.ensemble_size: 1"
        )
    elif rounds.reward_refresh == "continue" and int(reward.get("ensemble_size") or 1) > 1:
        problems.append(
            "rounds.reward_refresh=continue cannot continue a reward ensemble (reward.ensemble_size > 1); use "
            "reward_refresh: retrain"
        )
    return problems

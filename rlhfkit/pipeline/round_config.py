"""The ``rounds`` section of the pipeline config (iterative RLHF) and what rounds r >= 2 cannot run with.

A round's stages are the manifest entries (and folders) ``round-<r>/<stage>`` of :data:`ROUND_STAGES`, run after the
pipeline's rl stage and before final_eval (:meth:`rlhfkit.pipeline.config.PipelineConfig.stages`); what they do is
:mod:`rlhfkit.pipeline.rounds`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
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


def rounds_problems(raw: dict[str, Any], sections: dict[str, Any], model, rl) -> list[str]:
    """What rounds r >= 2 cannot run with: labels only the lab, the judge or (not yet) people give; an RL start apart
    from the reference only in PPO's separate layout; a reward ensemble cannot continue from the last one."""
    prefs, data, rounds = sections["preferences"], sections["data"], sections["rounds"]
    problems = []
    if prefs.source == "data" and data.preferences != "lab":
        problems.append(
            f"rounds.count={rounds.count} labels each round's new answers, which data.preferences={data.preferences!r}"
            " cannot; set preferences.source: comparisons (lab labelers) or judge, or rounds.count: 1"
        )
    if prefs.labels == "people":
        problems.append(
            f"rounds.count={rounds.count} with preferences.labels: people is not built yet (a round would wait for "
            "people's votes); use labels: lab or preferences.source: judge, or rounds.count: 1"
        )
    if rl.algorithm not in ("ppo", "dpo"):
        problems.append(
            f"rounds.count={rounds.count} runs rl.algorithm: ppo or dpo only (the reference stays at the SFT model "
            f"while the policy starts from the last round's; {rl.algorithm} is not built for rounds); set "
            "rl.algorithm: ppo or dpo, or rounds.count: 1"
        )
    elif model.preset != "full" or (rl.algorithm == "ppo" and rl.layout == "shared"):
        problems.append(
            f"rounds.count={rounds.count} needs model.preset: full (and PPO's separate layout; got preset "
            f"{model.preset!r}, layout {rl.layout!r}): a LoRA policy's reference is its own start, not the SFT model"
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

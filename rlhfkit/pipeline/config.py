"""The pipeline config: sections, validation, and which keys each stage depends on.

Config sections (TRL's dataclasses where TRL has one)::

    output_dir: runs/lab
    seed: 0
    model:     ModelArguments   (model_name_or_path, preset, gpu, model_revision)
    lab:       LabArguments     (sizes and labeler pool of the built-in lab, when data is 'lab')
    data:      DataSources      (sft / preferences / prompts: 'lab' or a file; preference_format)
    preferences: PreferencesArguments (source: data | comparisons: the SFT model's answers labelled by lab / people |
                                       judge: labelled by an AI judge)
    agreement: AgreementArguments (min_agreement, drop_unreliable, ties, enabled)
    sft:       trl.SFTConfig fields
    reward:    rlhfkit.reward.config.RewardConfig fields (trl.RewardConfig + group_rankings, ensemble_size /
    _bootstrap) gate:      GateArguments    (min_accuracy, override)
    rl:        RLArguments      (algorithm: ppo | grpo | rloo | dpo | best_of_n, layout, reward_aggregation, ...)
    ppo:       rlhfkit.rl.ppo.config.PPOConfig fields
    grpo:      rlhfkit.rl.configs.GRPOConfig fields
    rloo:      rlhfkit.rl.configs.RLOOConfig fields
    dpo:       rlhfkit.rl.configs.DPOConfig fields
    best_of_n: rlhfkit.rl.configs.BestOfNConfig fields (rejection-sampling fine-tuning)
    monitor:   rlhfkit.monitors.MonitorConfig fields
    rounds:    RoundsArguments  (count, prompts_per_round, k, labels_per_round, reward_refresh, mix: iterative RLHF)
"""

from __future__ import annotations

import copy
import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import yaml
from trl import SFTConfig

from rlhfkit import lab
from rlhfkit.core.arguments import PREFERENCE_FORMATS, ModelArguments, read_yaml, trainer_config
from rlhfkit.core.errors import ConfigError, raise_problems
from rlhfkit.core.rules import (
    AT_LEAST_ONE,
    FRACTION,
    NON_NEGATIVE,
    PROBABILITY,
    Range,
    check_values,
    config_problems,
    unknown_keys,
)
from rlhfkit.data.agreement import TIES
from rlhfkit.models.scoring import AGGREGATIONS
from rlhfkit.monitors import MonitorConfig
from rlhfkit.pipeline.manifest import config_hash
from rlhfkit.pipeline.round_config import ROUND_STAGES, RoundsArguments, round_stage, rounds_problems
from rlhfkit.reward.config import RewardConfig
from rlhfkit.reward.gate import MAX_PAIR_LENGTH_BIAS
from rlhfkit.rl.algorithms import ALGORITHMS, RL_ALGORITHMS

# The config class of each training run the pipeline builds: SFT, the reward model and every RL algorithm.
TRAINER_CONFIGS: dict[str, type] = {
    "sft": SFTConfig,
    "reward": RewardConfig,
    **{name: algorithm.config_class() for name, algorithm in ALGORITHMS.items()},
}


STAGES = ("sft", "preferences", "reward", "rm_eval", "rl", "final_eval")


def _field(default=dataclasses.MISSING, *, stages: tuple[str, ...], help: str, **kwargs):
    """A section field whose value feeds ``stages`` (a changed value redoes them; see :data:`STAGE_KEYS`)."""
    return field(default=default, metadata={"help": help, "stages": stages}, **kwargs)


@dataclass
class LabArguments:
    """The built-in lab's data sizes and labeler pool (used where a data source is ``lab``)."""

    demonstrations: int = _field(2000, stages=("sft",), help="SFT demonstrations generated.")
    comparisons: int = _field(4000, stages=("preferences",), help="Pairwise comparisons, each voted on by the pool.")
    labelers: int = _field(5, stages=("preferences",), help="Simulated labelers in the pool.")
    noise: Any = _field(
        stages=("preferences",),
        default_factory=lambda: list(lab.DEFAULT_NOISE),
        help="Flip rate, one for all labelers or one per labeler (the last one is unreliable).",
    )
    length_bias: Any = _field(0.0, stages=("preferences",), help="Chance a labeler just picks the longer answer.")
    labelers_per_item: int | None = _field(None, stages=("preferences",), help="Votes per comparison (None: all).")
    eval_comparisons: int = _field(
        600, stages=("preferences",), help="Held-out comparisons labelled by the gold reward."
    )
    rl_prompts: int = _field(512, stages=("rl",), help="Prompts for the RL stage.")

    RANGES: ClassVar[dict[str, Range]] = {
        **dict.fromkeys(("demonstrations", "comparisons", "labelers", "labelers_per_item"), AT_LEAST_ONE),
        **dict.fromkeys(("eval_comparisons", "rl_prompts"), AT_LEAST_ONE),
        **dict.fromkeys(("noise", "length_bias"), PROBABILITY),
    }

    def __post_init__(self):
        problems = config_problems(self)
        for name in ("noise", "length_bias"):
            value = getattr(self, name)
            numbers = value if isinstance(value, list) else [value]
            if not all(isinstance(x, (int, float)) and not isinstance(x, bool) for x in numbers):
                problems.append(f"{name}={value!r} must be a probability or a list of them, one per labeler")
            elif isinstance(value, list) and len(value) != self.labelers:
                problems.append(
                    f"{name} has {len(value)} values for labelers={self.labelers}; give one per labeler or one for all"
                )
        if self.labelers_per_item is not None and self.labelers_per_item > self.labelers:
            problems.append(
                f"labelers_per_item={self.labelers_per_item} is more than labelers={self.labelers}; lower it or add "
                "labelers"
            )
        raise_problems(problems)


@dataclass
class DataSources:
    """Where each stage's data comes from: ``lab`` or a file / hub dataset."""

    sft: str = _field("lab", stages=("sft",), help="SFT rows: prompt/completion, messages or text.")
    preferences: str = _field("lab", stages=("preferences",), help="Preference data (see rlhfkit.data formats).")
    preference_format: str = _field("auto", stages=("preferences",), help=" | ".join(PREFERENCE_FORMATS))
    preference_options: dict[str, Any] | None = _field(
        None,
        stages=("preferences",),
        help="Options of the preference format's reader (rlhfkit.data), e.g. {labeler_cols: ann1,ann2,ann3, "
        "labels: '1=a,2=b,0=tie'} for votes, {responses_col: outputs} for rankings.",
    )
    prompts: str = _field(
        "lab", stages=("rl",), help="RL prompts: rows with a 'prompt' column (text or chat messages)."
    )
    split: str = _field("train", stages=("sft", "preferences", "rl"), help="Split of hub datasets / dataset folders.")
    max_prompts: int | None = _field(
        None,
        stages=("rl",),
        help="RL prompts used from data.prompts (None: all but the rl.eval_prompts held out).",
    )
    eval_fraction: float = _field(0.05, stages=("sft", "preferences"), help="Share of SFT / preference rows held out.")

    RANGES: ClassVar[dict[str, Range]] = {"max_prompts": AT_LEAST_ONE, "eval_fraction": FRACTION}

    def __post_init__(self):
        problems = config_problems(self)
        if self.preference_format not in PREFERENCE_FORMATS:
            problems.append(
                f"preference_format={self.preference_format!r} is not a format; choose one of {PREFERENCE_FORMATS}"
            )
        for name in ("sft", "preferences", "prompts"):
            if not str(getattr(self, name)).strip():
                problems.append(f"{name} is empty; give 'lab', a data file, a dataset folder or a hub dataset id")
        if self.preferences != "lab" and self.eval_fraction == 0:
            problems.append(
                "eval_fraction=0 holds out no preference pairs, so rm_eval has nothing to evaluate the reward model "
                "on; set it above 0, e.g. 0.05"
            )
        raise_problems(problems)


PREFERENCE_SOURCES = ("data", "comparisons", "judge")
PREFERENCE_LABELS = ("lab", "people")


@dataclass
class PreferencesArguments:
    """Where the reward model's preferences come from. ``data``: ``data.preferences`` (a file, a hub dataset or the
    lab's ready-made comparisons). ``comparisons``: InstructGPT's step 2 on this run's own SFT model -- ``k`` answers
    per prompt are sampled into ``<output_dir>/preferences/comparisons.jsonl`` and labelled by the lab's labelers (the
    ``lab`` section's pool) or by people (the ``votes`` file ``rlhfkit label`` writes). ``judge``: the same answers
    labelled by an AI judge (``judge``, under a ``constitution``; RLAIF). The votes are filtered by the ``agreement``
    section into pairs or K-wise rankings."""

    source: str = _field(
        "data",
        stages=("preferences",),
        help="data (data.preferences) | comparisons (the SFT model's answers, labelled) | judge (labelled by a judge)",
    )
    prompts: int = _field(
        200,
        stages=("preferences",),
        help="comparisons / judge: prompts sampled from data.prompts (not the rl.eval_prompts held out; lab: 72).",
    )
    k: int = _field(4, stages=("preferences",), help="comparisons / judge: answers per prompt (InstructGPT: 4 to 9).")
    temperature: float = _field(
        1.0, stages=("preferences",), help="comparisons / judge: sampling temperature (1: the policy)."
    )
    max_new_tokens: int = _field(128, stages=("preferences",), help="comparisons / judge: longest answer, in tokens.")
    labels: str = _field(
        "lab",
        stages=("preferences",),
        help="comparisons: lab (the lab section's labelers, lab.labelers_per_item votes per pair) | people (votes).",
    )
    votes: str | None = _field(
        None,
        stages=("preferences",),
        help="labels: people: the votes file `rlhfkit label <output_dir>/preferences/comparisons.jsonl` writes.",
    )
    min_votes: int | None = _field(
        None,
        stages=(),  # when to go on, not what is trained on (the votes the run read are kept in the stage's folder)
        help="labels: people: votes needed before the stage goes on (None: every pair labelled once); until then the "
        "run waits for labels (`rlhfkit run --min-votes N`).",
    )
    judge: str | None = _field(
        None,
        stages=("preferences",),
        help="source: judge: the judge model, a folder or hub id (the lab's: rlhfkit.feedback.lab_judge.build_judge).",
    )
    constitution: str | None = _field(
        None, stages=("preferences",), help="source: judge: its principles, a YAML file (None: the default ones)."
    )
    tie_margin: float = _field(
        0.05, stages=("preferences",), help="source: judge: a vote is a tie when |p - 0.5| is below this."
    )
    principles_per_pair: int | None = _field(
        None, stages=("preferences",), help="source: judge: a seeded sample of principles per pair (None: all)."
    )

    RANGES: ClassVar[dict[str, Range]] = {
        "prompts": AT_LEAST_ONE,
        "tie_margin": Range(0, 0.5, high_open=True, example="0.05"),
        "principles_per_pair": AT_LEAST_ONE,
        "min_votes": AT_LEAST_ONE,
        "k": Range(2, example="4"),
        "temperature": Range(0, low_open=True, example="1.0"),
        "max_new_tokens": AT_LEAST_ONE,
    }

    def __post_init__(self):
        problems = config_problems(self)
        if self.source not in PREFERENCE_SOURCES:
            problems.append(f"source={self.source!r} must be one of {', '.join(PREFERENCE_SOURCES)}")
        if self.labels not in PREFERENCE_LABELS:
            problems.append(f"labels={self.labels!r} must be one of {', '.join(PREFERENCE_LABELS)}")
        elif self.labels == "people" and self.source != "comparisons":
            problems.append("labels=people is read only with source: comparisons")
        elif self.source == "comparisons" and self.labels == "people" and not (self.votes or "").strip():
            problems.append(
                "labels=people reads the votes people gave; set votes: to the file `rlhfkit label` writes (it may not "
                "exist yet: the stage then samples the comparisons to label and stops)"
            )
        for key in ("votes", "min_votes"):
            if getattr(self, key) is not None and (self.source != "comparisons" or self.labels != "people"):
                value = getattr(self, key)
                problems.append(f"{key}={value!r} is read only with source: comparisons and labels: people")
        if self.source == "judge" and not (self.judge or "").strip():
            problems.append("source=judge needs judge: the judge model (a folder or hub id)")
        for key in ("judge", "constitution", "principles_per_pair"):
            if getattr(self, key) is not None and self.source != "judge":
                problems.append(f"{key}={getattr(self, key)!r} is read only with source: judge")
        raise_problems(problems)


@dataclass
class AgreementArguments:
    """Labeler-agreement filtering of preference votes (only for data with per-labeler votes)."""

    enabled: bool = field(default=True, metadata={"help": "Filter pairs by labeler agreement."})
    min_agreement: float = field(default=0.6, metadata={"help": "Drop pairs whose majority share is below this."})
    drop_unreliable: bool = field(default=True, metadata={"help": "Drop flagged labelers' votes first."})
    ties: str = field(
        default="drop",
        metadata={
            "help": "drop: tie items are not pairs; margin: keep items with more votes for one side, with the vote "
            "margin as TRL's margin column."
        },
    )

    def __post_init__(self):
        problems = config_problems(self)
        if self.ties not in TIES:
            problems.append(f"ties={self.ties!r} must be one of {', '.join(TIES)}")
        raise_problems(problems)


@dataclass
class GateArguments:
    """The reward-model gate before RL: rm_eval judges the reward model, the rl stage refuses to optimise a weak one
    (DPO, which does not optimise it, runs anyway and says so)."""

    min_accuracy: float = _field(0.60, stages=("rm_eval",), help="Held-out accuracy the reward model must reach.")
    max_pair_length_bias: float | None = _field(
        MAX_PAIR_LENGTH_BIAS,
        stages=("rm_eval",),
        help="Refuse RL when Spearman(margin, length difference) within pairs is above this (null: only warn).",
    )
    override: bool = _field(False, stages=("rl",), help="Run RL even when the gate fails (not advised).")

    def __post_init__(self):
        raise_problems(config_problems(self))


@dataclass
class RLArguments:
    """The RL stage."""

    algorithm: str = _field(
        "grpo",
        stages=("rl",),
        help="ppo (rlhfkit's PPOTrainer) | grpo | rloo (TRL's trainers) | dpo (TRL's DPOTrainer on the preference "
        "pairs) | best_of_n (rejection-sampling fine-tuning); each reads the section of its name.",
    )
    layout: str | None = _field(
        None, stages=("rl",), help="PPO only: separate | shared (one base + adapters); default from the preset."
    )
    reward_aggregation: str = _field(
        "mean",
        stages=("rl",),
        help="With a reward ensemble (reward.ensemble_size > 1): mean | min | mean_minus_std of the members' scores.",
    )
    reward_ensemble_coef: float = _field(
        1.0, stages=("rl",), help="mean_minus_std only: weight of the members' std subtracted from their mean."
    )
    # Held-out prompts change only the final evaluation, except that those held out of a prompt dataset change
    # which prompts RL gets: stage_inputs adds the key to the rl stage then.
    eval_prompts: int = _field(200, stages=("final_eval",), help="Held-out prompts for the final evaluation.")
    max_new_tokens: int | None = _field(
        None,
        stages=("final_eval",),
        help="Response length in the final evaluation (None: the RL stage's response length).",
    )
    eval_temperature: float | None = _field(
        None,
        stages=("final_eval",),
        help="Sampling temperature of the final evaluation (None: the RL stage's; DPO: 1.0).",
    )

    RANGES: ClassVar[dict[str, Range]] = {
        "eval_prompts": AT_LEAST_ONE,
        "max_new_tokens": AT_LEAST_ONE,
        "reward_ensemble_coef": NON_NEGATIVE,
    }

    def __post_init__(self):
        problems = config_problems(self)
        if self.algorithm not in RL_ALGORITHMS:
            problems.append(f"algorithm={self.algorithm!r} must be one of {', '.join(RL_ALGORITHMS)}")
        if self.eval_temperature is not None and not self.eval_temperature > 0:
            problems.append(f"eval_temperature={self.eval_temperature} must be > 0 (or null: the RL stage's)")
        if self.layout not in (None, "separate", "shared"):
            problems.append(f"layout={self.layout!r} must be 'separate', 'shared' or null (from the preset)")
        if self.reward_aggregation not in AGGREGATIONS:
            problems.append(f"reward_aggregation={self.reward_aggregation!r} must be one of {', '.join(AGGREGATIONS)}")
        raise_problems(problems)


SECTIONS: dict[str, type] = {
    "model": ModelArguments,
    "lab": LabArguments,
    "data": DataSources,
    "preferences": PreferencesArguments,
    "agreement": AgreementArguments,
    "gate": GateArguments,
    "rl": RLArguments,
    "rounds": RoundsArguments,
}


TRL_SECTIONS = ("sft", "reward", *RL_ALGORITHMS, "monitor")


@dataclass
class PipelineConfig:
    """A parsed, validated pipeline config. ``raw`` keeps the YAML sections for hashing."""

    output_dir: Path
    seed: int
    model: ModelArguments
    lab: LabArguments
    data: DataSources
    preferences: PreferencesArguments
    agreement: AgreementArguments
    gate: GateArguments
    rl: RLArguments
    rounds: RoundsArguments
    trl: dict[str, dict[str, Any]]
    raw: dict[str, Any]

    def trainer_config(self, trainer: str, stage: str | None = None):
        """The config object of a training run (``sft``, ``reward``, ``ppo``, ``grpo``): the section's values over
        presets and precision, ``seed`` from the run, written into the pipeline stage's folder (``stage``: another
        stage's, e.g. ``round-2/reward``)."""
        return _trainer_config(self.trl, trainer, self.output_dir, self.seed, self.model, stage)

    def stages(self) -> tuple[str, ...]:
        """Every stage of this run in order: the pipeline's, with rounds 2..``rounds.count`` before final_eval."""
        rounds = [round_stage(r, s) for r in range(2, self.rounds.count + 1) for s in ROUND_STAGES]
        return (*STAGES[:-1], *rounds, STAGES[-1])


def _trainer_config(
    trl: dict[str, dict[str, Any]],
    trainer: str,
    output_dir: Path,
    seed: int,
    model: ModelArguments,
    stage: str | None = None,
):
    if trainer not in TRAINER_CONFIGS:
        raise ConfigError(f"unknown trainer {trainer!r}; choose one of {sorted(TRAINER_CONFIGS)}")
    section = dict(trl.get(trainer, {}))
    section.setdefault("seed", seed)
    section.setdefault("report_to", "none")
    out = output_dir / (stage or ("rl" if trainer in RL_ALGORITHMS else trainer))  # the pipeline stage's folder
    return trainer_config(
        TRAINER_CONFIGS[trainer], trainer, out, section, preset=model.preset, gpu=model.gpu, prefix=f"{trainer}."
    )


def _section(cls: type, name: str, values: dict[str, Any] | None):
    """Section ``name`` parsed into ``cls``; every problem (unknown key, type, range, the class's own checks) is
    raised together in one ConfigError, each naming ``name.key``."""
    values = {} if values is None else values
    if not isinstance(values, dict):
        raise ConfigError(
            f"section '{name}' must be a mapping of keys to values, got {type(values).__name__}; write {name}: "
            "followed by indented key: value lines"
        )
    known = {f.name for f in dataclasses.fields(cls)}
    values, problems = check_values(cls, values, prefix=f"{name}.")
    raise_problems(unknown_keys(values, known, f"{name}.") + problems)
    try:
        return cls(**values)
    except ConfigError as e:
        raise e.prefixed(f"{name}.") from e
    except (TypeError, ValueError) as e:
        raise ConfigError(f"{name}: {str(e).splitlines()[0]}") from e


def read_config(source: str | Path | dict[str, Any], overrides: dict[str, Any] | None = None) -> dict[str, Any]:
    """The raw config (a YAML path or a dict, copied) with ``overrides`` (dotted keys) applied."""
    raw = copy.deepcopy(source) if isinstance(source, dict) else read_yaml(source)
    for key, value in (overrides or {}).items():
        node = raw
        *parents, leaf = key.split(".")
        for p in parents:
            node = node.setdefault(p, {})
            if not isinstance(node, dict):
                raise ConfigError(f"--set {key}: '{p}' is not a section; use SECTION.KEY=VALUE, e.g. sft.max_steps=10")
        node[leaf] = value
    return raw


def _top_level_problems(raw: dict[str, Any]) -> list[str]:
    allowed = {"output_dir", "seed", *SECTIONS, *TRL_SECTIONS}
    problems = unknown_keys(raw, allowed, valid=f"valid top-level keys: {sorted(allowed)}")
    out = raw.get("output_dir")
    if out is None:
        problems.append("output_dir is missing; set output_dir: runs/NAME in the config")
    elif not isinstance(out, str) or not out.strip():
        problems.append(f"output_dir={out!r} must be a folder path, e.g. output_dir: runs/NAME")
    seed = raw.get("seed", 0)
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        problems.append(f"seed={seed!r} must be a whole number >= 0, e.g. seed: 0")
    for name in TRL_SECTIONS:
        if not isinstance(raw.get(name) or {}, dict):
            problems.append(
                f"section '{name}' must be a mapping of keys to values, got {type(raw[name]).__name__}; write "
                f"{name}: followed by indented key: value lines"
            )
    return problems


def load_config(source: str | Path | dict[str, Any], overrides: dict[str, Any] | None = None) -> PipelineConfig:
    """Parse and validate a pipeline config (a YAML path or a dict) -- every value, before anything starts.

    ``overrides`` are dotted keys (``{"sft.max_steps": 10, "output_dir": "runs/x"}``). Every section is checked (types,
    ranges, unknown keys, the classes' own checks; every trainer config is built, so TRL's own errors show too), and
    all problems are raised together in one :class:`ConfigError`, one line each. Data files, model folders and the
    output folder are checked by :func:`rlhfkit.pipeline.validate.check_pipeline`.
    """
    raw = read_config(source, overrides)
    problems = _top_level_problems(raw)
    sections: dict[str, Any] = {}
    for name, cls in SECTIONS.items():
        try:
            sections[name] = _section(cls, name, raw.get(name))
        except ConfigError as e:
            problems += e.problems
    trl = {name: dict(raw.get(name) or {}) if isinstance(raw.get(name) or {}, dict) else {} for name in TRL_SECTIONS}
    output_dir = Path(str(raw.get("output_dir") or "."))
    seed = raw.get("seed", 0)
    seed = seed if isinstance(seed, int) and not isinstance(seed, bool) and seed >= 0 else 0  # reported above
    model = sections.get("model") or ModelArguments()
    rl = sections.get("rl") or RLArguments()
    # Build every training config now, so a bad key or value is reported before any stage starts (every RL section
    # that is given: switching rl.algorithm later must not meet a typo).
    for trainer in ("sft", "reward", *(s for s in RL_ALGORITHMS if s == rl.algorithm or trl[s])):
        try:
            _trainer_config(trl, trainer, output_dir, seed, model)
        except ConfigError as e:
            problems += e.problems
    if trl["monitor"]:
        try:
            trl["monitor"] = dataclasses.asdict(_section(MonitorConfig, "monitor", trl["monitor"]))
        except ConfigError as e:
            problems += e.problems
    problems += _layout_problems(model, rl)
    if "preferences" in sections and "data" in sections:
        problems += _comparisons_problems(raw, sections["preferences"], sections["data"], output_dir)
    if "rounds" in sections and sections["rounds"].count > 1 and {"preferences", "data"} <= set(sections):
        problems += rounds_problems(raw, sections, model, rl)
    raise_problems(problems)
    return PipelineConfig(output_dir=output_dir, seed=seed, trl=trl, raw=raw, **sections)


def _layout_problems(model: ModelArguments, rl: RLArguments) -> list[str]:
    """PPO's layout must suit the method preset (found here, not when the RL stage starts)."""
    if rl.algorithm != "ppo" or rl.layout is None:
        return []
    if rl.layout == "shared" and model.preset == "full":
        return ["rl.layout=shared keeps policy and value as LoRA adapters; use model.preset lora or qlora"]
    if rl.layout == "separate" and model.preset == "qlora":
        return ["rl.layout=separate trains a full value model, which cannot be 4-bit; use rl.layout: shared"]
    return []


def _comparisons_problems(
    raw: dict[str, Any], prefs: PreferencesArguments, data: DataSources, output_dir: Path
) -> list[str]:
    """``preferences.source: comparisons`` (or ``judge``) reads no ``data.preferences``, holds pairs out for rm_eval,
    and keeps the people's votes out of the stage folder (which a fresh start of the stage removes)."""
    if prefs.source == "data":
        return []
    given = raw.get("data") if isinstance(raw.get("data"), dict) else {}
    problems = [
        f"data.{key} is not read with preferences.source: {prefs.source} (the pairs come from the SFT model's "
        "answers); remove it, or set preferences.source: data"
        for key in ("preferences", "preference_format", "preference_options")
        if key in given
    ]
    reward = raw.get("reward") if isinstance(raw.get("reward"), dict) else {}
    if reward.get("soft_labels") is True and prefs.source == "comparisons":
        problems.append(
            "reward.soft_labels=true needs a judge's probabilities p, which lab labelers and people do not give; "
            "use preferences.source: judge or set soft_labels: false"
        )
    if data.eval_fraction == 0:
        problems.append(
            "data.eval_fraction=0 holds out no labelled comparisons, so rm_eval has nothing to evaluate the reward "
            "model on; set it above 0, e.g. 0.1"
        )
    if prefs.votes is not None:
        votes, stage_dir = Path(prefs.votes).expanduser().resolve(), (output_dir / "preferences").resolve()
        if votes.is_relative_to(stage_dir):
            problems.append(
                f"preferences.votes={prefs.votes!r} is inside {str(output_dir / 'preferences')!r}, which the stage "
                "removes when it starts over; keep the votes file outside it (e.g. next to the config)"
            )
    return problems


# Sections that feed one or more stages as a whole (the rest say per field, in their ``stages`` metadata).
WHOLE_SECTIONS: dict[str, tuple[str, ...]] = {
    "seed": ("sft", "preferences"),
    "model": ("sft",),
    "sft": ("sft",),
    "agreement": ("preferences",),
    "reward": ("reward",),
    **dict.fromkeys(RL_ALGORITHMS, ("rl",)),
    "monitor": ("rl",),
}
FIELD_SECTIONS: dict[str, type] = {
    "lab": LabArguments,
    "data": DataSources,
    "preferences": PreferencesArguments,
    "gate": GateArguments,
    "rl": RLArguments,
}


def _stage_keys() -> dict[str, tuple[str, ...]]:
    """Which config keys each stage depends on, derived from :data:`WHOLE_SECTIONS` and the ``stages`` metadata of
    the per-field sections (a field without it fails here, at import: every key must feed some stage)."""
    keys: dict[str, list[str]] = {stage: [] for stage in STAGES}
    for section, stages in WHOLE_SECTIONS.items():
        for stage in stages:
            keys[stage].append(section)
    for section, cls in FIELD_SECTIONS.items():
        for f in dataclasses.fields(cls):
            for stage in f.metadata["stages"]:
                keys[stage].append(f"{section}.{f.name}")
    return {stage: tuple(k) for stage, k in keys.items()}


# Which config keys each stage depends on (its hash also covers the stages before it, through their hashes).
STAGE_KEYS: dict[str, tuple[str, ...]] = _stage_keys()


def stage_inputs(cfg: PipelineConfig, stage: str) -> dict[str, Any]:
    """The slice of the raw config a stage depends on (a round's stage: its base stage's and the ``rounds``
    section; a round's comparisons: the preferences stage's)."""
    if "/" in stage:
        base = stage.split("/")[-1]
        return {**stage_inputs(cfg, "preferences" if base == "comparisons" else base), "rounds": cfg.raw.get("rounds")}
    out: dict[str, Any] = {}
    for key in STAGE_KEYS[stage]:
        node: Any = cfg.raw
        for part in key.split("."):
            node = node.get(part) if isinstance(node, dict) else None
        if node is not None:  # unset keys are left out, so a key added in a later rlhfkit leaves old hashes valid
            out[key] = node
    if stage == "rl":  # only the chosen algorithm's section matters
        for other in set(RL_ALGORITHMS) - {cfg.rl.algorithm}:
            out.pop(other, None)
        if cfg.data.prompts != "lab":
            out["rl.eval_prompts"] = cfg.rl.eval_prompts
    return out


def stage_digests(cfg: PipelineConfig) -> dict[str, tuple[dict[str, Any], str]]:
    """Each stage's inputs (:func:`stage_inputs`) and its hash, chained: a stage's hash covers its inputs and the hash
    of the stage before it, so a change redoes that stage and every later one. What the manifest records."""
    out, upstream = {}, ""
    for stage in cfg.stages():
        inputs = stage_inputs(cfg, stage)
        upstream = config_hash({"inputs": inputs, "upstream": upstream})
        out[stage] = (inputs, upstream)
    return out


def parse_overrides(items: list[str]) -> dict[str, Any]:
    """``["sft.max_steps=100", "grpo.beta=0.1"]`` -> ``{"sft.max_steps": 100, ...}`` (values in YAML syntax)."""
    out = {}
    for item in items:
        if "=" not in item:
            raise ConfigError(f"--set {item!r}: use KEY=VALUE, e.g. --set sft.max_steps=100")
        key, value = item.split("=", 1)
        try:
            out[key.strip()] = yaml.safe_load(value)
        except yaml.YAMLError as e:
            raise ConfigError(f"--set {item!r}: the value is not valid YAML ({str(e).splitlines()[0]})") from None
    return out

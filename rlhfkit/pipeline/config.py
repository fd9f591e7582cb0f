"""The pipeline config: sections, validation, and which keys each stage depends on.

Config sections (TRL's dataclasses where TRL has one)::

    output_dir: runs/lab
    seed: 0
    model:     ModelArguments   (model_name_or_path, preset, gpu, model_revision)
    lab:       LabArguments     (sizes and labeler pool of the built-in lab, when data is 'lab')
    data:      DataSources      (sft / preferences / prompts: 'lab' or a file; preference_format)
    agreement: AgreementArguments (min_agreement, drop_unreliable, ties, enabled)
    sft:       trl.SFTConfig fields
    reward:    rlhfkit.reward.RewardConfig fields (trl.RewardConfig + group_rankings)
    gate:      GateArguments    (min_accuracy, override)
    rl:        RLArguments      (algorithm: ppo | grpo, eval_prompts)
    ppo:       rlhfkit.ppo.PPOConfig fields
    grpo:      rlhfkit.grpo.GRPOConfig fields
    monitor:   rlhfkit.monitors.MonitorConfig fields
"""

from __future__ import annotations

import copy
import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from trl import SFTConfig

from rlhfkit import lab
from rlhfkit.config import ModelArguments, coerce_numbers, trainer_config
from rlhfkit.data.agreement import TIES
from rlhfkit.errors import ConfigError
from rlhfkit.grpo import GRPOConfig
from rlhfkit.monitors import MonitorConfig
from rlhfkit.ppo.config import PPOConfig
from rlhfkit.reward import RewardConfig

# The config class of each training run the pipeline builds, and the RL ones among them.
TRAINER_CONFIGS: dict[str, type] = {"sft": SFTConfig, "reward": RewardConfig, "ppo": PPOConfig, "grpo": GRPOConfig}
RL_TRAINERS = ("ppo", "grpo")


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


@dataclass
class DataSources:
    """Where each stage's data comes from: ``lab`` or a file / hub dataset."""

    sft: str = _field("lab", stages=("sft",), help="SFT rows: prompt/completion, messages or text.")
    preferences: str = _field("lab", stages=("preferences",), help="Preference data (see rlhfkit.data formats).")
    preference_format: str = _field(
        "auto", stages=("preferences",), help="auto | hh | columns | rankings | scores | votes"
    )
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
        if self.ties not in TIES:
            raise ConfigError(f"agreement.ties={self.ties!r} must be one of {', '.join(TIES)}")


@dataclass
class GateArguments:
    """The reward-model gate before RL."""

    min_accuracy: float = field(default=0.60, metadata={"help": "Held-out accuracy the reward model must reach."})
    override: bool = field(default=False, metadata={"help": "Run RL even when the gate fails (not advised)."})


@dataclass
class RLArguments:
    """The RL stage."""

    algorithm: str = _field(
        "grpo", stages=("rl",), help="grpo (TRL's GRPOTrainer) or ppo (rlhfkit's PPOTrainer, section 'ppo')."
    )
    layout: str | None = _field(
        None, stages=("rl",), help="PPO only: separate | shared (one base + adapters); default from the preset."
    )
    # Held-out prompts change only the final evaluation, except that those held out of a prompt dataset change
    # which prompts RL gets: stage_inputs adds the key to the rl stage then.
    eval_prompts: int = _field(200, stages=("final_eval",), help="Held-out prompts for the final evaluation.")
    max_new_tokens: int | None = _field(
        None,
        stages=("final_eval",),
        help="Response length in the final evaluation (None: the RL stage's response length).",
    )

    def __post_init__(self):
        if self.algorithm not in ("ppo", "grpo"):
            raise ConfigError(f"rl.algorithm={self.algorithm!r} must be 'ppo' or 'grpo'")
        if self.layout not in (None, "separate", "shared"):
            raise ConfigError(f"rl.layout={self.layout!r} must be 'separate', 'shared' or null (from the preset)")


SECTIONS: dict[str, type] = {
    "model": ModelArguments,
    "lab": LabArguments,
    "data": DataSources,
    "agreement": AgreementArguments,
    "gate": GateArguments,
    "rl": RLArguments,
}


TRL_SECTIONS = ("sft", "reward", "ppo", "grpo", "monitor")


@dataclass
class PipelineConfig:
    """A parsed, validated pipeline config. ``raw`` keeps the YAML sections for hashing."""

    output_dir: Path
    seed: int
    model: ModelArguments
    lab: LabArguments
    data: DataSources
    agreement: AgreementArguments
    gate: GateArguments
    rl: RLArguments
    trl: dict[str, dict[str, Any]]
    raw: dict[str, Any]

    def trainer_config(self, trainer: str):
        """The config object of a training run (``sft``, ``reward``, ``ppo``, ``grpo``): the section's values over
        presets and precision, ``seed`` from the run, written into the pipeline stage's folder."""
        section = dict(self.trl.get(trainer, {}))
        section.setdefault("seed", self.seed)
        section.setdefault("report_to", "none")
        out = self.output_dir / ("rl" if trainer in RL_TRAINERS else trainer)  # the pipeline stage's folder
        if trainer not in TRAINER_CONFIGS:
            raise ConfigError(f"unknown trainer {trainer!r}; choose one of {sorted(TRAINER_CONFIGS)}")
        try:
            return trainer_config(
                TRAINER_CONFIGS[trainer], trainer, out, preset=self.model.preset, gpu=self.model.gpu, **section
            )
        except ConfigError as e:
            raise ConfigError(f"{trainer}: {e}") from e
        except (TypeError, ValueError) as e:
            raise ConfigError(f"{trainer}: {str(e).splitlines()[0]}") from e


def _section(cls: type, name: str, values: dict[str, Any] | None):
    values = values or {}
    if not isinstance(values, dict):
        raise ConfigError(f"section '{name}' must be a mapping of keys to values, got {type(values).__name__}")
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - known)
    if unknown:
        raise ConfigError(f"unknown key(s) {[f'{name}.{k}' for k in unknown]}; valid keys: {sorted(known)}")
    try:
        return cls(**coerce_numbers(cls, values, prefix=f"{name}."))
    except TypeError as e:
        raise ConfigError(f"{name}: {e}") from e


def load_config(source: str | Path | dict[str, Any], overrides: dict[str, Any] | None = None) -> PipelineConfig:
    """Parse and validate a pipeline config (a YAML path or a dict) -- everything, before anything starts.

    ``overrides`` are dotted keys (``{"sft.max_steps": 10, "output_dir": "runs/x"}``).
    """
    if isinstance(source, dict):
        raw = copy.deepcopy(source)
    else:
        path = Path(source)
        if not path.is_file():
            raise ConfigError(f"config file {str(path)!r} not found")
        raw = yaml.safe_load(path.read_text()) or {}
        if not isinstance(raw, dict):
            raise ConfigError(f"config file {str(path)!r} must be a YAML mapping of sections")
    for key, value in (overrides or {}).items():
        node = raw
        *parents, leaf = key.split(".")
        for p in parents:
            node = node.setdefault(p, {})
            if not isinstance(node, dict):
                raise ConfigError(f"--set {key}: '{p}' is not a section; use SECTION.KEY=VALUE, e.g. sft.max_steps=10")
        node[leaf] = value
    allowed = {"output_dir", "seed", *SECTIONS, *TRL_SECTIONS}
    unknown = sorted(set(raw) - allowed)
    if unknown:
        raise ConfigError(f"unknown top-level key(s) {unknown}; valid keys: {sorted(allowed)}")
    if "output_dir" not in raw:
        raise ConfigError("output_dir is missing; set output_dir: runs/NAME in the config")
    sections = {name: _section(cls, name, raw.get(name)) for name, cls in SECTIONS.items()}
    for name in TRL_SECTIONS:
        if not isinstance(raw.get(name) or {}, dict):
            raise ConfigError(f"section '{name}' must be a mapping of keys to values, got {type(raw[name]).__name__}")
    trl = {name: dict(raw.get(name) or {}) for name in TRL_SECTIONS}
    cfg = PipelineConfig(
        output_dir=Path(raw["output_dir"]), seed=int(raw.get("seed", 0)), trl=trl, raw=raw, **sections
    )
    # Build every training config now, so a bad key or value is reported before any stage starts (both RL sections
    # when both are given: switching rl.algorithm later must not meet a typo).
    for trainer in ("sft", "reward", *(s for s in RL_TRAINERS if s == cfg.rl.algorithm or trl[s])):
        cfg.trainer_config(trainer)
    if trl["monitor"]:
        trl["monitor"] = dataclasses.asdict(_section(MonitorConfig, "monitor", trl["monitor"]))
    return cfg


# Sections that feed one or more stages as a whole (the rest say per field, in their ``stages`` metadata).
WHOLE_SECTIONS: dict[str, tuple[str, ...]] = {
    "seed": ("sft", "preferences"),
    "model": ("sft",),
    "sft": ("sft",),
    "agreement": ("preferences",),
    "reward": ("reward",),
    "gate": ("rm_eval",),
    "ppo": ("rl",),
    "grpo": ("rl",),
    "monitor": ("rl",),
}
FIELD_SECTIONS: dict[str, type] = {"lab": LabArguments, "data": DataSources, "rl": RLArguments}


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
    """The slice of the raw config a stage depends on, plus the hashes of the stages before it."""
    out: dict[str, Any] = {}
    for key in STAGE_KEYS[stage]:
        node: Any = cfg.raw
        for part in key.split("."):
            node = node.get(part) if isinstance(node, dict) else None
        if node is not None:  # unset keys are left out, so a key added in a later rlhfkit leaves old hashes valid
            out[key] = node
    if stage == "rl":  # only the chosen algorithm's section matters
        out.pop("grpo" if cfg.rl.algorithm == "ppo" else "ppo", None)
        if cfg.data.prompts != "lab":
            out["rl.eval_prompts"] = cfg.rl.eval_prompts
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

"""The InstructGPT pipeline: SFT -> preference data (+ agreement filtering) -> reward model ->
evaluation + gate -> RL (PPO or GRPO, with monitors) -> final evaluation.

One YAML config describes the run (sections below); every stage writes into ``<output_dir>/<stage>/``
and records its status, config hash, outputs and key metrics in ``<output_dir>/manifest.json``
(:mod:`rlhfkit.manifest`). Running the same command again skips finished stages and resumes an
interrupted one from its last checkpoint; ``from_stage`` redoes a stage and everything after it; a
finished stage whose config changed is reported (with the changed keys), never silently reused.

Config sections (TRL's dataclasses where TRL has one)::

    output_dir: runs/lab
    seed: 0
    model:     ModelArguments   (model_name_or_path, preset, gpu, model_revision)
    lab:       LabArguments     (sizes and labeler pool of the built-in lab, when data is 'lab')
    data:      DataSources      (sft / preferences / prompts: 'lab' or a file; preference_format)
    agreement: AgreementArguments (min_agreement, drop_unreliable, enabled)
    sft:       trl.SFTConfig fields
    reward:    trl.RewardConfig fields
    gate:      GateArguments    (min_accuracy, override)
    rl:        RLArguments      (algorithm: ppo | grpo, eval_prompts)
    ppo:       rlhfkit.ppo.PPOConfig fields
    grpo:      trl.GRPOConfig fields
    monitor:   rlhfkit.monitors.MonitorConfig fields
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import logging
import os
import shutil
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from rlhfkit.configs import ModelArguments
from rlhfkit.errors import ConfigError, RlhfkitError
from rlhfkit.manifest import Manifest, changed_keys, config_hash

logger = logging.getLogger(__name__)

STAGES = ("sft", "preferences", "reward", "rm_eval", "rl", "final_eval")


@dataclass
class LabArguments:
    """The built-in lab's data sizes and labeler pool (used where a data source is ``lab``)."""

    demonstrations: int = field(default=2000, metadata={"help": "SFT demonstrations generated."})
    comparisons: int = field(default=4000, metadata={"help": "Pairwise comparisons, each voted on by the pool."})
    labelers: int = field(default=5, metadata={"help": "Simulated labelers in the pool."})
    noise: Any = field(
        default_factory=lambda: [0.1, 0.15, 0.2, 0.25, 0.45],
        metadata={"help": "Flip rate, one for all labelers or one per labeler (the last one is unreliable)."},
    )
    length_bias: Any = field(default=0.0, metadata={"help": "Chance a labeler just picks the longer answer."})
    labelers_per_item: int | None = field(default=None, metadata={"help": "Votes per comparison (None: all)."})
    eval_comparisons: int = field(default=600, metadata={"help": "Held-out comparisons labelled by the gold reward."})
    rl_prompts: int = field(default=512, metadata={"help": "Prompts for the RL stage."})


@dataclass
class DataSources:
    """Where each stage's data comes from: ``lab`` or a file / hub dataset."""

    sft: str = field(default="lab", metadata={"help": "SFT rows: prompt/completion, messages or text."})
    preferences: str = field(default="lab", metadata={"help": "Preference data (see rlhfkit.data formats)."})
    preference_format: str = field(
        default="auto", metadata={"help": "auto | hh | columns | rankings | scores | votes"}
    )
    prompts: str = field(
        default="lab", metadata={"help": "RL prompts: rows with a 'prompt' column (text or chat messages)."}
    )
    split: str = field(default="train", metadata={"help": "Split of hub datasets / dataset folders."})
    max_prompts: int | None = field(
        default=None,
        metadata={"help": "RL prompts used from data.prompts (None: all but the rl.eval_prompts held out)."},
    )
    eval_fraction: float = field(default=0.05, metadata={"help": "Share of SFT / preference rows held out."})


@dataclass
class AgreementArguments:
    """Labeler-agreement filtering of preference votes (only for data with per-labeler votes)."""

    enabled: bool = field(default=True, metadata={"help": "Filter pairs by labeler agreement."})
    min_agreement: float = field(default=0.6, metadata={"help": "Drop pairs whose majority share is below this."})
    drop_unreliable: bool = field(default=True, metadata={"help": "Drop flagged labelers' votes first."})


@dataclass
class GateArguments:
    """The reward-model gate before RL."""

    min_accuracy: float = field(default=0.60, metadata={"help": "Held-out accuracy the reward model must reach."})
    override: bool = field(default=False, metadata={"help": "Run RL even when the gate fails (not advised)."})


@dataclass
class RLArguments:
    """The RL stage."""

    algorithm: str = field(
        default="grpo", metadata={"help": "grpo (TRL's GRPOTrainer) or ppo (rlhfkit's PPOTrainer, section 'ppo')."}
    )
    layout: str | None = field(
        default=None,
        metadata={"help": "PPO only: separate | shared (one base + adapters); default from the preset."},
    )
    eval_prompts: int = field(default=200, metadata={"help": "Held-out prompts for the final evaluation."})
    max_new_tokens: int | None = field(
        default=None,
        metadata={"help": "Response length in the final evaluation (None: the RL stage's response length)."},
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

    def stage_config(self, stage: str):
        """The TRL / rlhfkit config object of a training stage, with presets and precision applied."""
        from rlhfkit.stages import stage_config

        section = dict(self.trl.get(stage, {}))
        section.setdefault("seed", self.seed)
        section.setdefault("report_to", "none")
        out = self.output_dir / ("rl" if stage in ("ppo", "grpo") else stage)  # the pipeline stage's folder
        if stage == "sft":
            from trl import SFTConfig as cls
        elif stage == "reward":
            from trl import RewardConfig as cls
        elif stage == "grpo":
            from trl import GRPOConfig as cls

            from rlhfkit.stages import GRPO_DEFAULTS

            section = {**GRPO_DEFAULTS, **section}  # beta=0.04: TRL's default 0 removes the KL leash
        elif stage == "ppo":
            from rlhfkit.ppo import PPOConfig as cls
        else:
            raise ConfigError(f"unknown training stage {stage!r}")
        preset = self.model.preset
        try:
            return stage_config(cls, stage, out, preset=preset, gpu=self.model.gpu, **section)
        except ConfigError as e:
            raise ConfigError(f"{stage}: {e}") from e
        except (TypeError, ValueError) as e:
            raise ConfigError(f"{stage}: {str(e).splitlines()[0]}") from e


def _section(cls: type, name: str, values: dict[str, Any] | None):
    values = values or {}
    if not isinstance(values, dict):
        raise ConfigError(f"section '{name}' must be a mapping of keys to values, got {type(values).__name__}")
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - known)
    if unknown:
        raise ConfigError(f"unknown key(s) {[f'{name}.{k}' for k in unknown]}; valid keys: {sorted(known)}")
    from rlhfkit.stages import coerce_numbers

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
    for stage in ("sft", "reward", *(s for s in ("ppo", "grpo") if s == cfg.rl.algorithm or trl[s])):
        cfg.stage_config(stage)
    if trl["monitor"]:
        from rlhfkit.monitors import MonitorConfig

        trl["monitor"] = dataclasses.asdict(_section(MonitorConfig, "monitor", trl["monitor"]))
    return cfg


# Which config sections each stage depends on (its hash also covers the stages before it).
STAGE_SECTIONS: dict[str, tuple[str, ...]] = {
    "sft": ("model", "sft", "seed", "data.sft", "data.split", "data.eval_fraction", "lab.demonstrations"),
    "preferences": (
        "data.preferences",
        "data.preference_format",
        "data.split",
        "data.eval_fraction",
        *(f"lab.{k}" for k in ("comparisons", "labelers", "noise", "length_bias", "labelers_per_item")),
        "lab.eval_comparisons",
        "agreement",
        "seed",
    ),
    "reward": ("reward",),
    "rm_eval": ("gate",),
    # rl.eval_prompts and rl.max_new_tokens only change the final evaluation (except that eval prompts held out of a
    # prompt dataset change which prompts RL gets: added in stage_inputs)
    "rl": (
        "rl.algorithm",
        "rl.layout",
        "ppo",
        "grpo",
        "monitor",
        "data.prompts",
        "data.split",
        "data.max_prompts",
        "lab.rl_prompts",
    ),
    "final_eval": ("rl.eval_prompts", "rl.max_new_tokens"),
}


def stage_inputs(cfg: PipelineConfig, stage: str) -> dict[str, Any]:
    """The slice of the raw config a stage depends on, plus the hashes of the stages before it."""
    out: dict[str, Any] = {}
    for key in STAGE_SECTIONS[stage]:
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


# Stages that only read data and evaluate run on the main process; the training stages run on every process.
MAIN_PROCESS_STAGES = ("preferences", "rm_eval", "final_eval")


@dataclass
class StageContext:
    """What a stage function gets: the config, the manifest, earlier stages' outputs, a progress hook, and the
    process group (``state``: accelerate's ``PartialState`` under ``torchrun`` / ``accelerate launch``, else None)."""

    cfg: PipelineConfig
    manifest: Manifest
    outputs: dict[str, dict[str, Any]]
    say: Callable[[str], None]
    state: Any = None

    def dir(self, stage: str) -> Path:
        return self.cfg.output_dir / stage

    @property
    def is_main(self) -> bool:
        return self.state is None or self.state.is_main_process

    def barrier(self) -> None:
        if self.state is not None:
            self.state.wait_for_everyone()

    def main_process_first(self):
        """The main process runs the block first (e.g. building a lab model once), then the others."""
        return contextlib.nullcontext() if self.state is None else self.state.main_process_first()


class GateFailed(RlhfkitError):
    """The reward model is too weak to steer RL (override with gate.override: true)."""


def distributed_state():
    """accelerate's ``PartialState`` when launched with several processes (``torchrun``, ``accelerate launch``), else
    None. ``load_config`` has usually created the process group already, through the first TRL config it builds
    (with ``sft.ddp_timeout``, 30 minutes by default: the longest a process may wait for the main one's data and
    evaluation stages; raise it for large hub datasets or long evaluations). Otherwise it is created here, with the
    device the trainers will use (gloo on a CPU-only machine). The processes must share ``output_dir``."""
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return None
    import torch
    from accelerate import PartialState

    return PartialState(cpu=not torch.cuda.is_available())


def run_pipeline(
    cfg: PipelineConfig,
    *,
    from_stage: str | None = None,
    until: str | None = None,
    say: Callable[[str], None] = logger.info,
) -> Manifest:
    """Run (or resume) the pipeline. Returns the manifest with every stage's outputs and metrics.

    Under ``torchrun`` / ``accelerate launch`` every process calls this: the training stages (sft, reward, rl) run
    on all of them (DDP), the data and evaluation stages on the main process while the others wait, and only the
    main process writes the manifest; the others read it after each stage.
    """
    from rlhfkit import pipeline_stages
    from rlhfkit.stages import remove_checkpoints

    if from_stage is not None and from_stage not in STAGES:
        raise ConfigError(f"--from {from_stage!r} is not a stage; choose one of {list(STAGES)}")
    if until is not None and until not in STAGES:
        raise ConfigError(f"--until {until!r} is not a stage; choose one of {list(STAGES)}")
    state = distributed_state()
    ctx = StageContext(cfg=cfg, manifest=None, outputs={}, say=say, state=state)  # type: ignore[arg-type]
    if ctx.is_main:
        cfg.output_dir.mkdir(parents=True, exist_ok=True)
        manifest = Manifest(cfg.output_dir)
        if from_stage is not None:
            manifest.invalidate_from(list(STAGES[STAGES.index(from_stage) :]))
    ctx.barrier()
    if not ctx.is_main:
        manifest = Manifest(cfg.output_dir, writable=False)
        ctx.say = lambda _msg: None  # progress is printed once, by the main process
    ctx.manifest = manifest
    upstream = ""
    for stage in STAGES:
        inputs = stage_inputs(cfg, stage)
        digest = config_hash({"inputs": inputs, "upstream": upstream})
        upstream = digest
        entry = manifest.stage(stage)
        if entry.get("status") == "done":
            if entry.get("config_hash") != digest:
                # no key changed: the stage was recorded by an rlhfkit that hashed its inputs differently
                keys = changed_keys(entry.get("config", {}), inputs) or ["the stage inputs rlhfkit records"]
                raise ConfigError(
                    f"stage '{stage}' finished with a different config (changed: {', '.join(keys)}); "
                    f"rerun with --from {stage} to redo it and every stage after it"
                )
            ctx.say(f"[{stage}] done earlier, skipping")
            ctx.outputs[stage] = {**entry.get("outputs", {}), "metrics": entry.get("metrics", {})}
        else:
            resuming = entry.get("status") in ("running", "failed")
            if resuming and entry.get("config_hash") != digest:  # never resume checkpoints of another config
                keys = changed_keys(entry.get("config", {}), inputs) or ["an earlier stage"]
                ctx.say(f"[{stage}] config changed since the interrupted run ({', '.join(keys)}): starting over")
                resuming = False
            if ctx.is_main:
                if not resuming and ctx.dir(stage).exists():  # a fresh start (or --from): no stale checkpoints
                    shutil.rmtree(ctx.dir(stage))
                manifest.start(stage, inputs, digest)
            ctx.say(f"[{stage}] {'resuming' if resuming else 'starting'}")
            ctx.barrier()
            ctx.outputs[stage] = _run_stage(ctx, stage, getattr(pipeline_stages, f"stage_{stage}"))
            # The final model is saved: checkpoints only cost disk now. An RL stage with monitor alerts keeps them
            # (an alert names the last healthy checkpoint to fall back to).
            if ctx.is_main and not ctx.outputs[stage]["metrics"].get("alerts"):
                remove_checkpoints(ctx.dir(stage))
        if stage == until:
            break
    return manifest


def _run_stage(ctx: StageContext, stage: str, fn: Callable) -> dict[str, Any]:
    """Run one stage (every process, or the main one while the others wait); record it; return its outputs."""
    manifest, error = ctx.manifest, None
    if ctx.is_main or stage not in MAIN_PROCESS_STAGES:
        try:
            outputs, metrics = fn(ctx)
            if ctx.is_main:
                manifest.finish(stage, outputs, metrics)
        except BaseException as e:  # SIGKILL skips this: the stage then stays "running" and resumes
            if ctx.is_main:
                manifest.update(stage, status="failed")
            if ctx.state is None or stage not in MAIN_PROCESS_STAGES:
                raise
            error = e  # reach the barrier below first, so the waiting processes learn of it and stop too
    ctx.barrier()
    if error is not None:
        raise error
    if not ctx.is_main:
        manifest.reload()
        if manifest.stage(stage).get("status") != "done":
            raise RlhfkitError(f"stage '{stage}' failed on the main process; see its error above")
    entry = manifest.stage(stage)
    return {**entry.get("outputs", {}), "metrics": entry.get("metrics", {})}


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


def run_and_report(cfg: PipelineConfig, *, from_stage: str | None = None, until: str | None = None) -> Manifest:
    """Run the pipeline with rich progress, then (main process) write the report and print the summary table."""
    import time

    from rich.console import Console
    from rich.logging import RichHandler

    from rlhfkit.report import print_summary, write_pipeline_report

    console = Console()
    logging.basicConfig(level=logging.WARNING, handlers=[RichHandler(console=console, show_path=False)])
    _quiet_library_progress_bars()  # keep the trainers' own progress bars; drop per-file loading / mapping bars
    start = time.perf_counter()
    state = distributed_state()
    is_main = state is None or state.is_main_process
    if is_main:
        console.rule(f"rlhfkit pipeline -> {cfg.output_dir}")
    manifest = run_pipeline(
        cfg, from_stage=from_stage, until=until, say=lambda m: console.print(m, markup=False, highlight=False)
    )
    if is_main:
        paths = write_pipeline_report(cfg, manifest)
        print_summary(console, manifest, wall_seconds=time.perf_counter() - start)
        console.print(f"report: {paths['markdown']}")
    return manifest


def _quiet_library_progress_bars() -> None:
    import datasets
    import transformers

    datasets.disable_progress_bars()
    transformers.utils.logging.disable_progress_bar()

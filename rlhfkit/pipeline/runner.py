"""Running the pipeline: stages in order, recorded in the manifest, skipped when done, resumed when interrupted.

:func:`run_pipeline` walks :data:`rlhfkit.pipeline.config.STAGES`: a finished stage whose inputs
(:func:`rlhfkit.pipeline.config.stage_inputs`) hash the same is skipped, one whose inputs changed is reported with
the changed keys (never silently reused), an interrupted one resumes from its last checkpoint, and ``from_stage``
redoes a stage and everything after it. :func:`run_and_report` adds rich progress and the report.
"""

from __future__ import annotations

import logging
import shutil
from collections.abc import Callable
from typing import Any

from rlhfkit.errors import ConfigError, RlhfkitError
from rlhfkit.pipeline.config import STAGES, PipelineConfig, stage_inputs
from rlhfkit.pipeline.context import MAIN_PROCESS_STAGES, StageContext, distributed_state
from rlhfkit.pipeline.manifest import Manifest, changed_keys, config_hash
from rlhfkit.pipeline.report import print_summary, write_pipeline_report
from rlhfkit.pipeline.stages import STAGE_FUNCTIONS
from rlhfkit.train import remove_checkpoints

logger = logging.getLogger(__name__)


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
            ctx.outputs[stage] = _run_stage(ctx, stage, STAGE_FUNCTIONS[stage])
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


def run_and_report(cfg: PipelineConfig, *, from_stage: str | None = None, until: str | None = None) -> Manifest:
    """Run the pipeline with rich progress, then (main process) write the report and print the summary table."""
    import time

    from rich.console import Console
    from rich.logging import RichHandler

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

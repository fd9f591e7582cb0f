"""Running the pipeline: stages in order, recorded in the manifest, skipped when done, resumed when interrupted.

:func:`run_pipeline` walks the run's stages (:meth:`rlhfkit.pipeline.config.PipelineConfig.stages`: the pipeline's,
with the rounds of iterative RLHF before final_eval): a finished stage whose inputs
(:func:`rlhfkit.pipeline.config.stage_inputs`) hash the same is skipped, one whose inputs changed is reported with
the changed keys (never silently reused), an interrupted one resumes from its last checkpoint, and ``from_stage``
redoes a stage and everything after it. :func:`run_and_report` adds rich progress and the report.
"""

from __future__ import annotations

import logging
import os
import shutil
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from rlhfkit.core.errors import ConfigError, RlhfkitError
from rlhfkit.pipeline.config import STAGES, PipelineConfig, stage_digests
from rlhfkit.pipeline.context import StageContext, WaitingForLabels, distributed_state
from rlhfkit.pipeline.lock import RunLock
from rlhfkit.pipeline.manifest import WAITING, Manifest, changed_files, changed_keys, folder_fingerprint
from rlhfkit.pipeline.report import print_summary, write_pipeline_report
from rlhfkit.pipeline.rounds import stage_function
from rlhfkit.runs import remove_checkpoints

logger = logging.getLogger(__name__)


def run_pipeline(
    cfg: PipelineConfig,
    *,
    from_stage: str | None = None,
    until: str | None = None,
    say: Callable[[str], None] = logger.info,
) -> Manifest:
    """Run (or resume) the pipeline. Returns the manifest with every stage's outputs and metrics.

    The main process first takes the run folder's lock (:class:`~rlhfkit.pipeline.lock.RunLock`: a second run on
    the same folder is refused), removes temporary files that a killed run left in it, and checks that every
    finished stage's files are still the ones it recorded (a stage whose files changed or went missing is redone,
    with every stage after it, and the reason is said).

    A stage that waits for people's votes (``preferences.labels: people``) is recorded ``waiting for labels``
    (:data:`~rlhfkit.pipeline.manifest.WAITING`, with the ``rlhfkit label`` command under ``waiting``) and the run
    stops there, without an error (:meth:`Manifest.waiting`); calling this again resumes that stage.

    Under ``torchrun`` / ``accelerate launch`` every process calls this: the training stages (sft, reward, rl) run
    on all of them (DDP), the data and evaluation stages on the main process while the others wait, and only the
    main process writes the manifest (and holds the lock); the others read it after each stage.
    """
    if from_stage is not None and from_stage not in cfg.stages():
        raise ConfigError(f"--from {from_stage!r} is not a stage; choose one of {list(cfg.stages())}")
    if until is not None and until not in STAGES:
        raise ConfigError(f"--until {until!r} is not a stage; choose one of {list(STAGES)}")
    state = distributed_state()
    ctx = StageContext(cfg=cfg, manifest=None, outputs={}, say=say, state=state)  # type: ignore[arg-type]
    lock = RunLock(cfg.output_dir, say=say)
    try:
        try:
            if ctx.is_main:
                _open_run_folder(ctx, lock, from_stage)
        except BaseException as e:
            ctx.share_error(e)  # the other processes wait for the main one here: they stop too
            raise
        ctx.share_error()
        if not ctx.is_main:
            ctx.manifest = Manifest(cfg.output_dir, writable=False)
            ctx.say = lambda _msg: None  # progress is printed once, by the main process
        _run_stages(ctx, until)
    finally:
        lock.release()
    return ctx.manifest


def _open_run_folder(ctx: StageContext, lock: RunLock, from_stage: str | None) -> None:
    """Main process: lock the run folder, remove a killed run's temporary files, verify the finished stages."""
    cfg, stages = ctx.cfg, ctx.cfg.stages()
    lock.acquire()
    for path in stale_temporary_files(cfg.output_dir):
        ctx.say(f"[cleanup] removing {path}, left half-written by an interrupted run")
        shutil.rmtree(path) if path.is_dir() else path.unlink()
    ctx.manifest = Manifest(cfg.output_dir)
    if from_stage is not None:
        ctx.manifest.invalidate_from(list(stages[stages.index(from_stage) :]))
    for stage, (_, digest) in stage_digests(cfg).items():
        entry = ctx.manifest.stage(stage)
        if entry.get("status") != "done" or entry.get("config_hash") != digest:
            continue
        changed = _changed_outputs(ctx, stage, entry)
        if changed:
            ctx.say(
                f"[{stage}] its files changed since it finished ({', '.join(changed[:3])}"
                f"{', ...' if len(changed) > 3 else ''}): redoing it and every stage after it"
            )
            ctx.manifest.invalidate_from(list(stages[stages.index(stage) :]))
            break


def _changed_outputs(ctx: StageContext, stage: str, entry: dict[str, Any]) -> list[str]:
    """What is missing or changed among a finished stage's recorded files, in the folder they were recorded in
    (a stage shared from another run folder, as ``rlhfkit compare`` shares them, is checked where it lives; for a
    manifest written before files were recorded: its output paths that are missing)."""
    if "files" in entry:
        folder = Path(entry.get("folder") or ctx.dir(stage))
        label = stage if folder == Path(ctx.dir(stage)) else str(folder)
        return [f"{label}/{item}" for item in changed_files(folder, entry["files"])]
    paths = [
        v for v in entry.get("outputs", {}).values() if isinstance(v, str) and v.startswith(str(ctx.cfg.output_dir))
    ]
    return [f"{path} (missing)" for path in paths if not Path(path).exists()]


def stale_temporary_files(output_dir: str | os.PathLike) -> list[Path]:
    """Temporary files and folders (``.NAME.*.tmp``, from :func:`rlhfkit.core.io.atomic_path`) that an interrupted run
    left in a run folder: at its top level and in the folders rlhfkit writes (stages, plots, the lab base model).
    Only call this while holding the folder's lock: a running writer's temporary files look the same."""
    root = Path(output_dir)
    found = [p for p in root.glob(".*.tmp")]
    rounds = sorted(p.name for p in root.glob("round-*") if p.is_dir())  # a round's stages live under round-<r>/
    for name in (*STAGES, *rounds, "plots", "base_model"):
        if (root / name).is_dir():
            found += [p for p in (root / name).rglob(".*.tmp") if not any(q in found for q in p.parents)]
    return sorted(found)


def _run_stages(ctx: StageContext, until: str | None) -> None:
    """Skip, resume or run each stage in order (every process)."""
    cfg, manifest = ctx.cfg, ctx.manifest
    for stage, (inputs, digest) in stage_digests(cfg).items():
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
            resuming = entry.get("status") in ("running", "failed", WAITING)
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
            try:
                ctx.outputs[stage] = _run_stage(ctx, stage, stage_function(stage))
            except WaitingForLabels as e:  # people label; the same command goes on from here
                ctx.say(str(e))
                return
            # The final model is saved: checkpoints only cost disk now. An RL stage with monitor alerts keeps them
            # (an alert names the last healthy checkpoint to fall back to).
            if ctx.is_main and not ctx.outputs[stage]["metrics"].get("alerts"):
                remove_checkpoints(ctx.dir(stage))
        if stage == until:
            break


def _run_stage(ctx: StageContext, stage: str, fn: Callable) -> dict[str, Any]:
    """Run one stage (every process, or the main one while the others wait); record it; return its outputs."""
    manifest, error = ctx.manifest, None
    if ctx.is_main or not ctx.main_only(stage):
        try:
            outputs, metrics = fn(ctx)
            if ctx.is_main:
                manifest.finish(
                    stage, outputs, metrics, files=folder_fingerprint(ctx.dir(stage)), folder=ctx.dir(stage)
                )
        except WaitingForLabels as e:  # not a failure: recorded, then raised on every process after the barrier
            if ctx.is_main:
                manifest.update(stage, status=WAITING, waiting={**e.details, "message": str(e)})
            error = e
        except BaseException as e:  # SIGKILL skips this: the stage then stays "running" and resumes
            if ctx.is_main:
                manifest.update(stage, status="failed")
            if ctx.state is None or not ctx.main_only(stage):
                raise
            error = e  # reach the barrier below first, so the waiting processes learn of it and stop too
    ctx.barrier()
    if error is not None:
        raise error
    if not ctx.is_main:
        manifest.reload()
        waiting = manifest.stage(stage).get("waiting")
        if manifest.stage(stage).get("status") == WAITING:
            raise WaitingForLabels(waiting["message"], waiting)
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
    # Warnings and monitor alerts as they happen: rich's on a terminal; elsewhere (CI logs, captured output) one plain
    # line each, which rich would wrap at 80 columns beside a time column.
    if console.is_terminal:
        logging.basicConfig(
            level=logging.WARNING, format="%(message)s", handlers=[RichHandler(console=console, show_path=False)]
        )
    else:
        logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s", stream=sys.stdout)
    _quiet_library_progress_bars()  # per-file loading / mapping bars (a trainer's is rlhfkit.monitors.progress)
    start = time.perf_counter()
    state = distributed_state()
    is_main = state is None or state.is_main_process
    if is_main:
        console.rule(f"rlhfkit pipeline -> {cfg.output_dir}")
    manifest = run_pipeline(
        cfg,
        from_stage=from_stage,
        until=until,
        say=lambda m: console.print(m, markup=False, highlight=False, soft_wrap=True),
    )
    if is_main:
        paths = write_pipeline_report(cfg, manifest)
        print_summary(console, manifest, wall_seconds=time.perf_counter() - start)
        console.print(f"report: {paths['markdown']}", soft_wrap=True)
        waiting = manifest.waiting()
        if waiting is not None:  # said when it happened; again last, where it is seen
            console.print(waiting[1]["waiting"]["message"], markup=False, highlight=False, soft_wrap=True)
    return manifest


def _quiet_library_progress_bars() -> None:
    import datasets
    import transformers

    datasets.disable_progress_bars()
    transformers.utils.logging.disable_progress_bar()

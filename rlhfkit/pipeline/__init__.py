"""The InstructGPT pipeline: SFT -> preference data (+ agreement filtering) -> reward model -> evaluation + gate ->
RL (PPO, GRPO, RLOO, DPO or rejection sampling, with monitors) -> final evaluation, from one YAML config.

* :mod:`rlhfkit.pipeline.config` -- sections, :func:`load_config`, which keys each stage depends on;
* :mod:`rlhfkit.pipeline.context` -- :class:`StageContext` (what a stage runs in), :class:`GateFailed`;
* :mod:`rlhfkit.pipeline.stages` -- one function per stage, calling the same functions as the recipes;
* :mod:`rlhfkit.pipeline.runner` -- :func:`run_pipeline` / :func:`run_and_report`: order, skip, resume;
* :mod:`rlhfkit.pipeline.manifest` -- ``manifest.json``; :mod:`rlhfkit.pipeline.report` -- report.md/json + plots.

Every stage writes into ``<output_dir>/<stage>/`` and records its status, config hash, outputs and key metrics in
``<output_dir>/manifest.json``.
"""

from typing import TYPE_CHECKING

from rlhfkit import lazy_exports

if TYPE_CHECKING:
    from rlhfkit.pipeline.config import STAGES, PipelineConfig, load_config, parse_overrides
    from rlhfkit.pipeline.context import GateFailed, StageContext
    from rlhfkit.pipeline.runner import run_and_report, run_pipeline

# imported on first use: ``rlhfkit.pipeline.config`` (all ``rlhfkit run --check`` needs) must not import the stages
__getattr__ = lazy_exports(
    __name__,
    {
        **dict.fromkeys(("STAGES", "PipelineConfig", "load_config", "parse_overrides"), "config"),
        **dict.fromkeys(("GateFailed", "StageContext"), "context"),
        **dict.fromkeys(("run_and_report", "run_pipeline"), "runner"),
    },
)


__all__ = [
    "STAGES",
    "GateFailed",
    "PipelineConfig",
    "StageContext",
    "load_config",
    "parse_overrides",
    "run_and_report",
    "run_pipeline",
]

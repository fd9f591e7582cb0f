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

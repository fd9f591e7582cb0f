"""The whole InstructGPT pipeline from one config: SFT -> preference data (+ labeler-agreement filtering) -> reward
model -> evaluation + gate -> RL (PPO, GRPO, RLOO, DPO or best-of-N, monitors on) -> final evaluation.

    accelerate launch recipes/instructgpt.py --config configs/lab/pipeline.yaml
    accelerate launch --config_file configs/accelerate/single_gpu.yaml recipes/instructgpt.py \
        --config configs/qwen2.5-7b-instruct/pipeline.yaml
    accelerate launch --config_file configs/accelerate/multi_gpu.yaml recipes/instructgpt.py \
        --config configs/llama-3.2-3b-instruct/pipeline.yaml --set ppo.kl_coef=0.1

The same as ``rlhfkit run CONFIG``: both check the whole config (``rlhfkit.pipeline.validate.check_pipeline``) and
hand it to ``rlhfkit.pipeline.runner.run_and_report``, which runs the stages in the order of
``rlhfkit.pipeline.stages.STAGE_FUNCTIONS`` (one function per stage, each taking a ``StageContext``) and writes the
report. ``--until STAGE`` stops after a stage; to change what a stage does, start from the per-stage recipes
(recipes/sft.py, reward.py, ppo.py, ...), which build each trainer step by step.

Each stage writes ``<output_dir>/<stage>/`` and records status, config hash, outputs and metrics in
``<output_dir>/manifest.json``. Rerunning the same command skips finished stages and resumes an interrupted one from
its last checkpoint; ``--from STAGE`` redoes a stage and everything after it; a finished stage whose config changed
is reported with the changed keys, never silently reused. Under several processes the training stages (sft, reward,
rl) run data-parallel on all of them, the data and evaluation stages on the main process.

Deliberately left out: a pretraining-loss mix in RL (PPO-ptx) and human labelling (preferences come from a file or
the lab's simulated labelers).
"""

import sys

from rlhfkit.core.entry import OneLineParser, pop_debug, run_guarded
from rlhfkit.pipeline.config import STAGES, parse_overrides
from rlhfkit.pipeline.runner import run_and_report
from rlhfkit.pipeline.validate import check_pipeline


def parse_args(argv: list[str] | None = None):
    parser = OneLineParser(prog="recipes/instructgpt.py", description=__doc__.splitlines()[0])
    parser.add_argument("--config", required=True, help="pipeline YAML, e.g. configs/lab/pipeline.yaml")
    parser.add_argument("--from", dest="from_stage", choices=STAGES, help="redo this stage and every stage after it")
    parser.add_argument("--until", choices=STAGES, help="stop after this stage")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="e.g. --set sft.max_steps=10")
    parser.add_argument("--out", help="output folder (overrides output_dir)")
    parser.add_argument("--check", action="store_true", help="only check the config, data, model and output folder")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None):
    args = parse_args(argv)

    # ---------------------------------------------------------------- config
    # The whole run is checked here, before anything starts: every section's values (TRL's own dataclasses for
    # sft / reward / grpo, rlhfkit's PPOConfig for ppo), every data source, the model and the output folder. Every
    # problem is reported, one line each, and nothing is created.
    overrides = parse_overrides(args.set)
    if args.out:
        overrides["output_dir"] = args.out
    cfg = check_pipeline(args.config, overrides)
    if args.check:
        print("config OK")
        return None

    # ---------------------------------------------------------------- stages
    # sft -> preferences -> reward -> rm_eval (gate) -> rl (cfg.rl.algorithm) -> final_eval, with the run manifest,
    # skip / resume / --from, then report.md + report.json + plots in cfg.output_dir (see rlhfkit.pipeline).
    return run_and_report(cfg, from_stage=args.from_stage, until=args.until)


if __name__ == "__main__":
    # A config or data error the user can fix: one `error:` line per problem, exit 2 (--debug: the traceback).
    argv, debug = pop_debug(sys.argv[1:])
    sys.exit(run_guarded(lambda: main(argv), debug))

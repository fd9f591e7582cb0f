"""The simplest use of a reward model: rejection-sampling fine-tuning (keep the best of N samples, then SFT).

    accelerate launch recipes/best_of_n.py --config configs/lab/best_of_n.yaml
    accelerate launch --config_file configs/accelerate/single_gpu.yaml recipes/best_of_n.py \
        --config configs/qwen2.5-0.5b-instruct/best_of_n.yaml

Each round samples `num_samples` responses per prompt from the current policy, keeps the reward model's favourite of
each prompt, and fine-tunes on them with TRL's SFTTrainer (every SFTConfig field applies to a round's fine-tuning).
No KL penalty: the number of rounds and steps is the leash; each round's KL to the SFT model is measured on its
samples and read by the monitors with the reward, length and truncation. Rounds are resumable
(`output_dir/round-<r>/`); the final policy is `output_dir/model`.

Unlike the RL recipes, this one leaves the rounds to rlhfkit.rl.best_of_n.run_best_of_n: each round is a sampling
pass, a selection and a whole SFT run (recipes/sft.py's trainer), and the loop over them (resuming a round, the
monitors' one log per round, the returned round after a stop alert) is the library's.

The decoding baseline (best-of-N at inference, gold and proxy vs N with the analytic KL log N - (N-1)/N) is drawn by
`rlhfkit compare`. Deliberately left out: a score threshold for keeping samples (the best of each prompt is kept)
and evaluation during training.
"""

import json
import logging
import sys
from dataclasses import dataclass, field

from accelerate import PartialState

from rlhfkit import lab
from rlhfkit.core.arguments import DataArguments, ModelArguments, resolve_model
from rlhfkit.data.tables import LAB, load_prompts
from rlhfkit.monitors import MonitorConfig
from rlhfkit.pipeline.validate import run_recipe
from rlhfkit.rl.best_of_n import run_best_of_n
from rlhfkit.rl.configs import BestOfNConfig

logger = logging.getLogger(__name__)


@dataclass
class SelectorArguments:
    """The reward model that picks the best sample."""

    reward_model_path: str = field(
        default="runs/lab/reward/model", metadata={"help": "Folder (or hub id) of the trained reward model."}
    )


def main(model_args, data_args, selector_args, monitor_config, training_args: BestOfNConfig) -> dict:
    # ---------------------------------------------------------------- data
    prompts, _ = load_prompts(
        data_args.dataset,
        split=data_args.dataset_split,
        seed=training_args.seed,
        n_lab=data_args.lab_samples,
        max_prompts=data_args.max_samples,
    )
    logger.info("prompts: %d (%s per round)", len(prompts), training_args.prompts_per_round or "all")

    # ---------------------------------------------------------------- rounds: sample, keep the best, fine-tune, save
    result = run_best_of_n(
        resolve_model(model_args.model_name_or_path),
        prompts,
        training_args,
        reward_model=selector_args.reward_model_path,
        preset=model_args.preset,
        monitor_config=monitor_config,
        metric_funcs=[lab.lab_gold] if data_args.dataset == LAB else None,  # gold logged, never used to select
    )

    # ---------------------------------------------------------------- report
    if PartialState().is_main_process:
        rounds = [{k: v for k, v in h.items() if not k.startswith("completions/")} for h in result.log_history]
        print(json.dumps({"model_dir": str(result.model_dir), "rounds": rounds, **result.metrics}, indent=2))
    return result.metrics


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO)
    sys.exit(
        run_recipe(main, "best_of_n", (ModelArguments, DataArguments, SelectorArguments, MonitorConfig, BestOfNConfig))
    )

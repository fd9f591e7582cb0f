"""Step 3 of InstructGPT with RLOO: REINFORCE with a leave-one-out baseline against the reward model.

    accelerate launch recipes/rloo.py --config configs/lab/rloo.yaml
    accelerate launch --config_file configs/accelerate/single_gpu.yaml recipes/rloo.py \
        --config configs/qwen2.5-0.5b-instruct/rloo.yaml

TRL's RLOOTrainer samples `num_generations` completions per prompt and scores them with the reward model (formatted
exactly as RewardTrainer trained it: rlhfkit.models.scoring.RewardModelScorer); a completion's advantage is its reward
minus the mean of its siblings'. No value model. `beta` is a per-sequence KL penalty in the reward, so it is in units
of the (normalised) reward: set `reward_mean` / `reward_std` from the reward model's eval report. The monitors
(rlhfkit.monitors) are always on; any MonitorConfig field can be set in the YAML or on the command line. After a stop
alert the saved policy is the average of the last healthy checkpoints. This script builds the same trainer as
rlhfkit.rl.grpo_rloo.run_rloo, step by step.

This file is recipes/grpo.py with RLOO's trainer and config, kept identical on purpose, so the two read side by side.
Deliberately left out: rule-based reward functions (pass them to RLOOTrainer's `reward_funcs` beside the reward
model) and evaluation during training (sample the saved model instead: it is an ordinary checkpoint).
"""

import json
import logging
import sys
from dataclasses import dataclass, field

from accelerate import PartialState
from trl import RLOOTrainer

from rlhfkit.core.arguments import DataArguments, ModelArguments, resolve_model
from rlhfkit.core.presets import method_preset
from rlhfkit.data.tables import load_prompts
from rlhfkit.models.loading import load_policy
from rlhfkit.models.scoring import load_reward_function, place_reward_function
from rlhfkit.monitors import MonitorConfig
from rlhfkit.pipeline.validate import run_recipe
from rlhfkit.rl import configs
from rlhfkit.rl.healthy import train_monitored
from rlhfkit.runs import prompt_dataset

logger = logging.getLogger(__name__)


@dataclass
class RewardArguments:
    """The reward model RLOO optimises."""

    reward_model_path: str = field(
        default="runs/lab/reward/model", metadata={"help": "Folder (or hub id) of the trained reward model."}
    )


@dataclass
class RLOOConfig(configs.RLOOConfig):
    """rlhfkit's RLOOConfig plus the reward model's score normalisation, as PPOConfig has it.

    Args:
        reward_mean (`float`, *optional*): scores become (score - reward_mean) / reward_std; take it from the reward
            model's eval report. Set together with ``reward_std``.
        reward_std (`float`, *optional*): reward_std of the reward model's eval report.
    """

    reward_mean: float | None = field(
        default=None, metadata={"help": "Scores become (score - mean) / std: reward_mean of the RM eval report."}
    )
    reward_std: float | None = field(default=None, metadata={"help": "reward_std of the reward model's eval report."})


def main(model_args, data_args, reward_args, monitor_config, training_args) -> dict:
    # ---------------------------------------------------------------- data
    prompts, _ = load_prompts(
        data_args.dataset,
        split=data_args.dataset_split,
        seed=training_args.seed,
        n_lab=data_args.lab_samples,
        max_prompts=data_args.max_samples,
    )
    logger.info("RLOO prompts: %d", len(prompts))

    # ---------------------------------------------------------------- model: the policy (with LoRA, TRL adds the
    # adapter and the reference is the policy with it disabled), and the reward model as a reward function
    sft_model = resolve_model(model_args.model_name_or_path)
    method = method_preset(model_args.preset)
    policy, tokenizer = load_policy(sft_model, method, trust_remote_code=training_args.trust_remote_code)
    reward = load_reward_function(
        reward_args.reward_model_path,
        method,
        mean=training_args.reward_mean,
        std=training_args.reward_std,
        trust_remote_code=training_args.trust_remote_code,
    )

    # ---------------------------------------------------------------- trainer
    trainer = RLOOTrainer(
        model=policy,
        reward_funcs=[reward],
        args=training_args,
        train_dataset=prompt_dataset(prompts),
        processing_class=tokenizer,
        peft_config=method.lora,
    )
    place_reward_function(reward, trainer.accelerator.device)

    # ---------------------------------------------------------------- train + save
    # Monitors on, resuming from the newest checkpoint-N; output_dir/model holds the (merged) policy, or after a stop
    # alert the average of the last healthy checkpoints (rlhfkit.rl.healthy.train_monitored).
    result = train_monitored(trainer, tokenizer, training_args, "rloo", sft_model, monitor_config)

    # ---------------------------------------------------------------- report
    if PartialState().is_main_process:
        last = next((h for h in reversed(result.log_history) if "reward" in h), {})
        summary = {k: last.get(k) for k in ("reward", "kl", "completions/mean_length", "entropy")}
        print(json.dumps({"model_dir": str(result.model_dir), **summary, **result.metrics}, indent=2, default=str))
    return result.metrics


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO)
    sys.exit(run_recipe(main, "rloo", (ModelArguments, DataArguments, RewardArguments, MonitorConfig, RLOOConfig)))

"""Step 3 of InstructGPT, with GRPO: RL against the trained reward model, KL-leashed to the SFT model.

    accelerate launch recipes/grpo.py --config configs/lab/grpo.yaml
    accelerate launch --config_file configs/accelerate/single_gpu.yaml recipes/grpo.py \
        --config configs/qwen2.5-0.5b-instruct/grpo.yaml

TRL's GRPOTrainer samples `num_generations` completions per prompt, scores them with the reward model (formatted
exactly as RewardTrainer trained it: rlhfkit.models.scoring.RewardModelScorer), and uses each completion's reward
relative to its group as the advantage; no value model. `beta` is the KL coefficient to the SFT model:
rlhfkit.rl.configs.GRPOConfig defaults it to 0.04 where TRL defaults to 0 (no reference model, no leash).
The monitors (rlhfkit.monitors) are always on: alerts in the log, `health.jsonl` and plots in `output_dir`, and any
MonitorConfig field can be set in the YAML or on the command line (`--kl_limit 10`). After a stop alert the saved
policy is the average of the last healthy checkpoints. This script builds the same trainer as
rlhfkit.rl.grpo_rloo.run_grpo, step by step.

Data rows need a `prompt` column (text, or chat messages for a chat model); `dataset: lab` uses the lab's prompts.
Deliberately left out: rule-based reward functions (pass them to GRPOTrainer's `reward_funcs` beside the reward
model) and evaluation during training (sample the saved model instead: it is an ordinary checkpoint).
"""

import json
import logging
import sys
from dataclasses import dataclass, field

from accelerate import PartialState
from trl import GRPOTrainer

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
    """The reward model GRPO optimises."""

    reward_model_path: str = field(
        default="runs/lab/reward/model", metadata={"help": "Folder (or hub id) of the trained reward model."}
    )


@dataclass
class GRPOConfig(configs.GRPOConfig):
    """rlhfkit's GRPOConfig plus the reward model's score normalisation, as PPOConfig has it.

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
    logger.info("GRPO prompts: %d", len(prompts))

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
    trainer = GRPOTrainer(
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
    result = train_monitored(trainer, tokenizer, training_args, "grpo", sft_model, monitor_config)

    # ---------------------------------------------------------------- report
    if PartialState().is_main_process:
        last = next((h for h in reversed(result.log_history) if "reward" in h), {})
        summary = {k: last.get(k) for k in ("reward", "kl", "completions/mean_length", "entropy")}
        print(json.dumps({"model_dir": str(result.model_dir), **summary, **result.metrics}, indent=2, default=str))
    return result.metrics


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO)
    sys.exit(run_recipe(main, "grpo", (ModelArguments, DataArguments, RewardArguments, MonitorConfig, GRPOConfig)))

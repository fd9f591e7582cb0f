"""An alternative to RL: DPO on the preference pairs, starting from the SFT model (no reward model, no sampling).

    accelerate launch recipes/dpo.py --config configs/lab/dpo.yaml
    accelerate launch --config_file configs/accelerate/single_gpu.yaml recipes/dpo.py \
        --config configs/qwen2.5-0.5b-instruct/dpo.yaml

rlhfkit's DPOTrainer (TRL's) fits the policy to the pairs with the reward model's own loss, the reward being the
policy's *implicit* reward `beta * log(pi / pi_ref)`; the reference is the SFT model (with LoRA: the policy with its
adapter off). `beta` is the leash: higher = closer to the SFT model. It also samples the policy at every log and
logs its KL to the reference (`objective/kl`, nats per sequence: the same quantity PPO logs), which the monitors read
with the reward margins, entropy and length (rlhfkit.monitors; any MonitorConfig field can be set here). After a stop
alert the saved policy is the average of the last healthy checkpoints. This script builds the same trainer as
rlhfkit.rl.dpo.run_dpo, step by step.

Data: the same preference formats as recipes/reward.py (`dataset: lab` uses the lab's simulated labelers, filtered
by `min_agreement`). After training, the held-out pairs are scored with the policy's implicit reward and reported
like a reward model (accuracy, AUC, calibration, length bias) in `output_dir/implicit_reward/`.
Deliberately left out: DPO variants (IPO, hinge, ... are TRL's `loss_type`), and sampling-based evaluation (see
`rlhfkit compare`).
"""

import json
import logging
import sys
from dataclasses import dataclass, field

from accelerate import PartialState

from rlhfkit.core.arguments import DataArguments, ModelArguments, resolve_model
from rlhfkit.core.presets import method_preset
from rlhfkit.data.tables import load_preference_data
from rlhfkit.models.loading import load_policy
from rlhfkit.monitors import MonitorConfig
from rlhfkit.pipeline.validate import run_recipe
from rlhfkit.reward.report import write_report
from rlhfkit.rl.configs import DPOConfig
from rlhfkit.rl.dpo import DPOTrainer, dpo_monitor_config, evaluate_implicit_reward
from rlhfkit.rl.healthy import train_monitored

logger = logging.getLogger(__name__)


@dataclass
class PairArguments:
    """Which preference pairs DPO trains on (the same filter as recipes/reward.py)."""

    min_agreement: float = field(default=0.0, metadata={"help": "Drop voted pairs below this labeler agreement."})


def main(model_args, data_args, pair_args, monitor_config, training_args: DPOConfig) -> dict:
    # ---------------------------------------------------------------- data
    train, held_out = load_preference_data(data_args, seed=training_args.seed, min_agreement=pair_args.min_agreement)
    logger.info("preference pairs: %d train, %d held out", len(train), 0 if held_out is None else len(held_out))

    # ---------------------------------------------------------------- model: the policy and its reference
    sft_model = resolve_model(model_args.model_name_or_path)
    method = method_preset(model_args.preset)
    policy, tokenizer = load_policy(sft_model, method, trust_remote_code=training_args.trust_remote_code)
    reference = None  # with LoRA: the policy with its adapter disabled (TRL does this), no second copy
    if method.lora is None:  # loaded as the policy is (same tokenizer fixes and dtype), frozen
        reference, _ = load_policy(sft_model, method, trust_remote_code=training_args.trust_remote_code)
        reference.eval().requires_grad_(False)

    # ---------------------------------------------------------------- trainer
    trainer = DPOTrainer(
        model=policy,
        ref_model=reference,
        args=training_args,
        train_dataset=train,
        processing_class=tokenizer,
        peft_config=method.lora,
    )

    # ---------------------------------------------------------------- train + save
    # Monitors on (DPO's log-ratio drift kept in their timeline), resuming from the newest checkpoint-N;
    # output_dir/model holds the (merged) policy, or after a stop alert the average of the last healthy checkpoints.
    monitor_config = dpo_monitor_config(monitor_config)
    result = train_monitored(trainer, tokenizer, training_args, "dpo", sft_model, monitor_config)

    # ---------------------------------------------------------------- evaluate: the implicit reward, as an RM's
    if held_out is not None and PartialState().is_main_process:
        report = evaluate_implicit_reward(
            result.model_dir,
            sft_model,
            held_out.to_list(),
            beta=training_args.beta,
            max_length=training_args.max_length,
            preset=model_args.preset,
        )
        write_report(report, f"{training_args.output_dir}/implicit_reward")
        last = next((h for h in reversed(result.log_history) if "objective/kl" in h), {})
        summary = {"implicit_reward_accuracy": report.accuracy, "auc": report.auc, "kl": last.get("objective/kl")}
        print(json.dumps({"model_dir": str(result.model_dir), **summary, **result.metrics}, indent=2, default=str))
    return result.metrics


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO)
    sys.exit(run_recipe(main, "dpo", (ModelArguments, DataArguments, PairArguments, MonitorConfig, DPOConfig)))

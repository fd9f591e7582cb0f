"""Step 3 of InstructGPT, with PPO: RL against the trained reward model, KL-penalised towards the SFT model.

    accelerate launch recipes/ppo.py --config configs/lab/ppo.yaml
    accelerate launch --config_file configs/accelerate/single_gpu.yaml recipes/ppo.py \
        --config configs/qwen2.5-0.5b-instruct/ppo.yaml

rlhfkit's PPOTrainer (TRL removed its own in 1.13; names, defaults and metrics follow TRL 1.12): each update
samples responses, scores them with the reward model at their last token, subtracts a per-token KL penalty
(``kl_coef``; adaptive with ``target_kl``), and takes ``num_ppo_epochs`` clipped steps for the policy and a value
model. Two layouts (``layout``): ``separate`` models (preset full) or one ``shared`` base (preset lora / qlora)
holding the policy, value and reward adapters, whose reference is the base with adapters disabled.
The monitors (rlhfkit.monitors) are always on; any ``MonitorConfig`` field can be set in the YAML. This script builds
the same trainer as rlhfkit.rl.ppo.run.run_ppo, step by step.

A rerun resumes from the newest ``checkpoint-N`` in ``output_dir``. The final policy is written to
``output_dir/model`` (a full model; a LoRA policy is merged, its adapter kept in ``output_dir/adapter``); after a
stop alert it is the average of the last healthy checkpoints. With ``dataset: lab`` the lab's gold reward of SFT
and PPO answers (sampled at ``temperature``) to held-out prompts is reported.
Deliberately left out: rule-based rewards (pass ``metric_funcs`` or a reward function to PPOTrainer from Python)
and PPO-ptx.
"""

import json
import logging
import sys
from dataclasses import dataclass, field

from accelerate import PartialState

from rlhfkit import lab
from rlhfkit.core.arguments import DataArguments, ModelArguments, resolve_model
from rlhfkit.data.tables import LAB, load_prompts
from rlhfkit.models.scoring import EnsembleScorer, place_reward_function, sample_responses
from rlhfkit.monitors import HealthMonitor, MonitorConfig, build_monitors
from rlhfkit.monitors.progress import show_progress
from rlhfkit.pipeline.validate import run_recipe
from rlhfkit.rl.healthy import frozen_check_targets, return_healthy, returns_start, save_starting_policy
from rlhfkit.rl.ppo import config as ppo_config
from rlhfkit.rl.ppo.layouts import load_ppo_models
from rlhfkit.rl.ppo.run import save_ppo_policy
from rlhfkit.rl.ppo.trainer import PPOTrainer
from rlhfkit.runs import prompt_dataset, resume_and_train

logger = logging.getLogger(__name__)


@dataclass
class PPOScriptArguments:
    """The reward model PPO optimises, and how the models share memory."""

    reward_model_path: str = field(
        default="runs/lab/reward/model", metadata={"help": "Folder of the trained reward model (reward stage)."}
    )
    layout: str | None = field(
        default=None, metadata={"help": "separate | shared (one base + adapters); default from the preset."}
    )
    eval_prompts: int = field(default=200, metadata={"help": "Lab only: held-out prompts for the gold-reward report."})


@dataclass
class PPOConfig(ppo_config.PPOConfig):
    """rlhfkit's PPOConfig plus ``trust_remote_code``, as TRL's configs have it.

    Args:
        trust_remote_code (`bool`, defaults to `False`): run model code from the hub.
    """

    trust_remote_code: bool = field(default=False, metadata={"help": "Run model code from the hub (off by default)."})


def sampled_gold(model_dir: str, prompts: list, max_new_tokens: int, temperature: float, seed: int = 0) -> float:
    """Mean lab gold reward of answers sampled as in training (``temperature``, no top-k / top-p) from a model."""
    answers = sample_responses(model_dir, prompts, max_new_tokens, seed, temperature)
    return float(lab.gold_rewards(prompts, answers).mean())


def main(model_args, data_args, script_args, monitor_config, training_args) -> dict:
    # ---------------------------------------------------------------- data
    # RL prompts and, in the lab, held-out prompts for the gold-reward report.
    lab_task = data_args.dataset == LAB
    prompts, held_out = load_prompts(
        data_args.dataset,
        split=data_args.dataset_split,
        seed=training_args.seed,
        n_lab=data_args.lab_samples,
        held_out=script_args.eval_prompts if lab_task else 0,
        max_prompts=data_args.max_samples,
    )
    logger.info("PPO prompts: %d", len(prompts))

    # ---------------------------------------------------------------- models
    # Policy, reference, reward and value models in the layout's form: PPOTrainer's keyword arguments.
    sft_model = resolve_model(model_args.model_name_or_path)
    models = load_ppo_models(
        sft_model,
        script_args.reward_model_path,
        preset=model_args.preset,
        layout=script_args.layout,
        trust_remote_code=training_args.trust_remote_code,
    )
    ensemble = models["reward_model"] if isinstance(models["reward_model"], EnsembleScorer) else None

    # ---------------------------------------------------------------- trainer
    trainer = PPOTrainer(
        training_args,
        train_dataset=prompt_dataset(prompts),
        metric_funcs=[ensemble.ensemble_std] if ensemble else [],  # the members' spread, logged every update
        **models,
    )
    if ensemble:
        place_reward_function(ensemble, trainer.accelerator.device)
    # Built after the trainer: they check that the reference and reward models it holds stay bit-identical.
    frozen, frozen_exclude = frozen_check_targets(trainer)
    monitors = build_monitors(monitor_config, frozen=frozen, frozen_exclude=frozen_exclude)
    for callback in monitors:
        trainer.add_callback(callback)
    health = next(m for m in monitors if isinstance(m, HealthMonitor))
    show_progress(trainer, "ppo", health)  # one progress bar with the monitors' numbers (RLHFKIT_VERBOSE=1: TRL's)

    # ---------------------------------------------------------------- train
    # Resumes from the newest checkpoint-N; after a stop alert the average of the last healthy checkpoints is loaded.
    metrics = resume_and_train(trainer, training_args, "ppo")
    metrics.update(return_healthy(trainer, health))

    # ---------------------------------------------------------------- save
    # output_dir/model: the policy (a LoRA policy merged into the SFT weights), or the SFT model itself when the
    # run stopped before any healthy checkpoint.
    if returns_start(metrics):
        model_dir = save_starting_policy(trainer, sft_model, training_args.output_dir)
    else:
        model_dir = save_ppo_policy(trainer, sft_model, training_args.output_dir)

    # ---------------------------------------------------------------- evaluate
    last = next((h for h in reversed(trainer.state.log_history) if "objective/scores" in h), {})
    summary = {k: last.get(k) for k in ("objective/scores", "objective/kl", "completions/mean_length")}
    summary["monitor_alerts"] = metrics["monitor_alerts"]
    if not PartialState().is_main_process:
        return summary
    if lab_task:
        n, temp = training_args.response_length, training_args.temperature
        summary["gold_sft"] = sampled_gold(sft_model, held_out, n, temp)  # PPO optimises the sampled policy: sample it
        summary["gold_ppo"] = sampled_gold(str(model_dir), held_out, n, temp)
    print(json.dumps({"model_dir": str(model_dir), **summary}, indent=2, default=str))
    return summary


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO)
    sys.exit(run_recipe(main, "ppo", (ModelArguments, DataArguments, PPOScriptArguments, MonitorConfig, PPOConfig)))

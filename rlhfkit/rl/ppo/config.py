""":class:`PPOConfig`: ``TrainingArguments`` plus PPO's fields, with TRL 1.12's names and defaults."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from transformers import TrainingArguments

from rlhfkit.core.errors import ConfigError
from rlhfkit.core.hardware import precision_kwargs


@dataclass
class PPOConfig(TrainingArguments):
    r"""Configuration of :class:`PPOTrainer`: ``TrainingArguments`` plus PPO's fields (TRL 1.12's names).

    Batch sizes follow TRL 1.12: one update samples ``per_device_train_batch_size * gradient_accumulation_steps``
    prompts per process; each PPO epoch splits them into ``num_mini_batches`` mini-batches (one optimiser
    step each), processed in micro-batches of ``per_device_train_batch_size``.

    Parameters:
        num_ppo_epochs (`int`, defaults to `4`): passes over each rollout batch (TRL 1.12).
        num_mini_batches (`int`, defaults to `1`): optimiser steps per PPO epoch (TRL 1.12).
        total_episodes (`int`, *optional*): prompts to sample in total; defaults to
            ``num_train_epochs * len(train_dataset)`` (TRL 1.12).
        local_rollout_forward_batch_size (`int`, defaults to `64`): sequences per no-grad generation / forward
            chunk in the rollout (TRL 1.12).
        num_sample_generations (`int`, defaults to `10`): how many times during training a few sampled
            completions are logged (0: never) (TRL 1.12).
        response_length (`int`, defaults to `53`): maximum new tokens per response (TRL 1.12).
        stop_token (`"eos"` or `None`, defaults to `None`): ``"eos"`` ends responses at the tokenizer's EOS;
            mutually exclusive with ``stop_token_id`` (TRL 1.12).
        stop_token_id (`int`, *optional*): token id that ends a response (TRL 1.12).
        temperature (`float`, defaults to `0.7`): sampling temperature; log-probs use the same (TRL 1.12).
        missing_eos_penalty (`float`, *optional*): subtracted from the score of responses without EOS (TRL 1.12).
        kl_coef (`float`, defaults to `0.05`): KL penalty coefficient beta, or its initial value with
            ``target_kl`` (TRL 1.12; InstructGPT used 0.02).
        kl_estimator (`"k1"` or `"k3"`, defaults to `"k1"`): per-token KL estimator (TRL 1.12; see
            http://joschu.net/blog/kl-approx.html).
        target_kl (`float`, *optional*): adapt ``kl_coef`` to keep the mean sequence KL near this value
            (Ziegler et al. 2019's adaptive controller); None keeps it fixed.
        kl_horizon (`int`, defaults to `10000`): the adaptive controller's horizon in episodes (Ziegler et al. 2019).
        cliprange (`float`, defaults to `0.2`): PPO policy clip range (TRL 1.12; Schulman et al. 2017).
        vf_coef (`float`, defaults to `0.1`): value-loss coefficient (TRL 1.12).
        cliprange_value (`float`, defaults to `0.2`): value clip range (TRL 1.12).
        gamma (`float`, defaults to `1.0`): discount factor (TRL 1.12; InstructGPT: undiscounted).
        lam (`float`, defaults to `0.95`): GAE lambda (TRL 1.12).
        whiten_rewards (`bool`, defaults to `False`): whiten per-token rewards (keeping their mean) before GAE
            (TRL 1.12).
        reward_mean (`float`, *optional*): subtract from reward-model scores; take ``reward_mean`` from the
            rm_eval report. Set together with ``reward_std``.
        reward_std (`float`, *optional*): divide reward-model scores by it; take ``reward_std`` from the rm_eval
            report.
        learning_rate (`float`, defaults to `3e-6`): TRL 1.12's PPO default (not TrainingArguments' 5e-5).
        logging_steps (`float`, defaults to `1`): log every update: updates are few and monitors read each one.
        bf16 / fp16 (`bool`, *optional*): None picks them from the hardware
            (:func:`rlhfkit.models.loading.precision_kwargs`): bf16 only on GPUs that support it, never on CPU.
        use_cpu (`bool`, *optional*): None picks it from the hardware: True on a machine without a GPU, which is
            also what makes ``torchrun`` start real (gloo) DDP there rather than independent copies.
    """

    learning_rate: float = field(default=3e-6, metadata={"help": "AdamW learning rate (TRL 1.12's PPO default)."})
    logging_steps: float = field(
        default=1, metadata={"help": "Log every N updates (default 1: monitors read every update)."}
    )
    bf16: bool | None = field(
        default=None, metadata={"help": "bf16 mixed precision; None: chosen from the hardware (never on CPU)."}
    )
    fp16: bool | None = field(
        default=None, metadata={"help": "fp16 mixed precision; None: chosen from the hardware (never on CPU)."}
    )
    use_cpu: bool | None = field(
        default=None, metadata={"help": "Train on the CPU; None: chosen from the hardware (True without a GPU)."}
    )
    num_ppo_epochs: int = field(default=4, metadata={"help": "Passes over each rollout batch (TRL 1.12)."})
    num_mini_batches: int = field(default=1, metadata={"help": "Optimiser steps per PPO epoch (TRL 1.12)."})
    total_episodes: int | None = field(
        default=None,
        metadata={"help": "Prompts to sample in total; default num_train_epochs * len(train_dataset) (TRL 1.12)."},
    )
    local_rollout_forward_batch_size: int = field(
        default=64, metadata={"help": "Sequences per no-grad generation / forward chunk in the rollout (TRL 1.12)."}
    )
    num_sample_generations: int = field(
        default=10,
        metadata={"help": "How many times during training sampled completions are logged; 0: never (TRL 1.12)."},
    )
    response_length: int = field(default=53, metadata={"help": "Maximum new tokens per response (TRL 1.12)."})
    stop_token: Literal["eos"] | None = field(
        default=None,
        metadata={"help": "'eos': responses end at the tokenizer's EOS; exclusive with stop_token_id (TRL 1.12)."},
    )
    stop_token_id: int | None = field(default=None, metadata={"help": "Token id that ends a response (TRL 1.12)."})
    temperature: float = field(
        default=0.7, metadata={"help": "Sampling temperature; log-probs use the same (TRL 1.12)."}
    )
    missing_eos_penalty: float | None = field(
        default=None, metadata={"help": "Subtracted from the score of responses without EOS (TRL 1.12)."}
    )
    kl_coef: float = field(
        default=0.05,
        metadata={"help": "KL penalty beta, or its initial value with target_kl (TRL 1.12; InstructGPT used 0.02)."},
    )
    kl_estimator: Literal["k1", "k3"] = field(
        default="k1", metadata={"help": "Per-token KL estimator: k1 or k3 (TRL 1.12; joschu.net/blog/kl-approx)."}
    )
    target_kl: float | None = field(
        default=None,
        metadata={"help": "Adapt kl_coef towards this mean sequence KL (Ziegler et al. 2019); None: fixed kl_coef."},
    )
    kl_horizon: int = field(
        default=10000, metadata={"help": "Adaptive KL controller horizon in episodes (Ziegler et al. 2019)."}
    )
    cliprange: float = field(default=0.2, metadata={"help": "PPO policy clip range (TRL 1.12)."})
    vf_coef: float = field(default=0.1, metadata={"help": "Value-loss coefficient (TRL 1.12)."})
    cliprange_value: float = field(default=0.2, metadata={"help": "Value clip range (TRL 1.12)."})
    gamma: float = field(default=1.0, metadata={"help": "Discount factor (TRL 1.12; InstructGPT: undiscounted)."})
    lam: float = field(default=0.95, metadata={"help": "GAE lambda (TRL 1.12)."})
    whiten_rewards: bool = field(
        default=False, metadata={"help": "Whiten per-token rewards, keeping their mean, before GAE (TRL 1.12)."}
    )
    reward_mean: float | None = field(
        default=None, metadata={"help": "Subtract from reward-model scores (rm_eval report's reward_mean)."}
    )
    reward_std: float | None = field(
        default=None, metadata={"help": "Divide reward-model scores by it (rm_eval report's reward_std)."}
    )

    def __post_init__(self):
        if self.bf16 is None or self.fp16 is None or self.use_cpu is None:
            hw = precision_kwargs()
            self.bf16 = hw["bf16"] if self.bf16 is None else self.bf16
            self.fp16 = (hw["fp16"] and not self.bf16) if self.fp16 is None else self.fp16
            self.use_cpu = hw["use_cpu"] if self.use_cpu is None else self.use_cpu
        super().__post_init__()
        problems = []
        if self.stop_token is not None and self.stop_token_id is not None:
            problems.append("stop_token and stop_token_id are both set; set only one")
        if self.stop_token not in (None, "eos"):
            problems.append(f"stop_token={self.stop_token!r} is not supported; use 'eos' or stop_token_id")
        if self.kl_estimator not in ("k1", "k3"):
            problems.append(f"kl_estimator={self.kl_estimator!r} is not supported; use 'k1' or 'k3'")
        if (self.reward_mean is None) != (self.reward_std is None):
            problems.append("reward_mean and reward_std must be set together (both from the rm_eval report)")
        if self.reward_std is not None and self.reward_std <= 0:
            problems.append(f"reward_std={self.reward_std} must be > 0")
        if self.target_kl is not None and self.target_kl <= 0:
            problems.append(f"target_kl={self.target_kl} must be > 0 (or None for a fixed kl_coef)")
        if self.temperature <= 0:
            problems.append(f"temperature={self.temperature} must be > 0 (PPO needs sampling)")
        if self.response_length < 1 or self.num_ppo_epochs < 1 or self.num_mini_batches < 1:
            problems.append("response_length, num_ppo_epochs and num_mini_batches must be >= 1")
        elif self.gradient_accumulation_steps % self.num_mini_batches:
            problems.append(
                f"gradient_accumulation_steps={self.gradient_accumulation_steps} must be a multiple of "
                f"num_mini_batches={self.num_mini_batches} (each mini-batch is a whole number of micro-batches)"
            )
        one_batch = self.per_device_train_batch_size * self.gradient_accumulation_steps
        if self.total_episodes is not None and 1 <= one_batch and self.total_episodes < one_batch:
            problems.append(
                f"total_episodes={self.total_episodes} is less than one update's batch (per_device_train_batch_size "
                f"x gradient_accumulation_steps = {one_batch}): PPO would make no update; raise it to >= {one_batch}"
            )
        if problems:
            raise ConfigError(*problems)

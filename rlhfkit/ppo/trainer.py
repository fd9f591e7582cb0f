"""PPO for RLHF (InstructGPT's RL stage): :class:`PPOConfig` + :class:`PPOTrainer`, in TRL's style.

TRL deleted its ``PPOTrainer`` in 1.13; this is rlhfkit's own, with TRL 1.12's field names, defaults and
metric names (``objective/kl``, ``policy/clipfrac_avg``, ...), so TRL users and rlhfkit's monitors feel at
home. The math lives in :mod:`rlhfkit.ppo.core` (pure, unit-tested tensor functions); this module is the loop.

Supports
--------
* One update = rollout (sample ``response_length`` tokens with ``top_k=0, top_p=1`` at ``temperature``;
  log-probs recomputed by a forward pass at that temperature), reference log-probs, reward scores
  (optionally normalised with rm_eval's ``reward_mean`` / ``reward_std``, minus ``missing_eos_penalty``),
  per-token KL penalty (``k1`` / ``k3``, fixed or adaptive coefficient -- Ziegler et al. 2019), GAE,
  advantage whitening, then ``num_ppo_epochs`` passes over ``num_mini_batches`` shuffled mini-batches with
  gradient accumulation, gradient clipping (``max_grad_norm``) and the Trainer's learning-rate schedule.
* Two model layouts (see :class:`PPOTrainer`): **separate** models (policy, frozen reference, frozen reward
  model, value model initialised from the reward model), or a **shared base** (:func:`build_shared_base`):
  one (optionally 4-bit) base holding the policy LoRA, a value LoRA + head and the reward model as a LoRA +
  head; the reference is the base with adapters disabled.
* Rewards from a reward model (``AutoModelForSequenceClassification``, ``num_labels=1``, read at the last real
  token), a reward adapter on the shared base, or a Python function (TRL's reward-function convention).
* ``transformers`` TrainerCallbacks (``on_train_begin``/``on_step_end``/``on_log``/``on_save``/``on_train_end``;
  a callback can stop training with ``control.should_training_stop``), checkpoints every ``save_steps`` and
  exact resume (weights, optimiser, scheduler, KL coefficient, RNG, step), final policy saved as safetensors.

Assumptions
-----------
* Decoder-only causal LMs; reward and value models expose their transformer as ``base_model_prefix`` and a
  ``score`` head (Llama, Qwen2, Mistral, Gemma, GPT-NeoX, GPT-2 ... all do).
* The reward model shares the policy's tokenizer unless ``reward_processing_class`` is given (then the
  response text is re-tokenised for it).
* ``pad_token_id != eos_token_id`` (refused otherwise: padding would be indistinguishable from stopping).
* Prompts fit the context together with ``response_length`` (they are not truncated).

Deliberately omitted
--------------------
* PPO-ptx (InstructGPT's pretraining-loss mix), value-function early stopping, approx-KL early stopping.
* TRL 1.12's evaluation loop / completion tables (a few samples are logged every
  ``total updates / num_sample_generations`` updates instead), vLLM generation, and DeepSpeed ZeRO-3 / FSDP
  (refused with a clear error: rollouts would need the sharded policy gathered). DDP is tested on 2 CPU processes;
  ZeRO-1/2 keep whole parameters on each GPU but are untested without GPUs.
* Reference *adapters* (``ref_adapter_name``): the reference is always the base with adapters disabled.
"""

from __future__ import annotations

import contextlib
import copy
import json
import logging
import math
import os
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import torch
from torch import nn
from transformers import GenerationConfig, Trainer

from rlhfkit.errors import ConfigError
from rlhfkit.ppo import core
from rlhfkit.ppo.config import PPOConfig
from rlhfkit.ppo.layouts import (
    PolicyAndValue,
    SharedBase,
    _adapter_parameters,
    _backbone_and_head,
    per_token_scores,
    use_adapter,
)

logger = logging.getLogger(__name__)

TRAINABLE_WEIGHTS_NAME = "trainable.safetensors"  # checkpoint-N/: every trainable tensor, for exact resume
PPO_STATE_NAME = "ppo_state.json"  # checkpoint-N/: the KL controller


# ============================================================================================== config


# ============================================================================================== model layouts


# ============================================================================================== trainer
RewardFunction = Callable[..., Sequence[float]]


class PPOTrainer(Trainer):
    """PPO trainer for language models (TRL 1.12's design: a ``transformers.Trainer`` whose ``train`` is PPO).

    Separate layout::

        PPOTrainer(args, tokenizer, model=policy, ref_model=ref, reward_model=rm, train_dataset=prompts,
                   value_model=value)          # value_model defaults to a trainable copy of rm

    Shared-base layout::

        shared = build_shared_base(base, LoraConfig(...), reward_adapter="runs/reward/adapter")
        PPOTrainer(args, tokenizer, model=shared, train_dataset=prompts)      # reward from the adapter

    Args:
        args: a :class:`PPOConfig`.
        processing_class: the policy's tokenizer (pad token distinct from EOS).
        model: the policy: a causal LM (separate layout; a ``PeftModel`` makes its disabled-adapter base the
            reference) or a :class:`SharedBase`.
        ref_model: frozen reference (separate layout, unless ``model`` is a ``PeftModel``); None with SharedBase.
        reward_model: a frozen ``AutoModelForSequenceClassification`` (``num_labels=1``), or a reward function
            called as ``fn(prompts=[str], completions=[str], completion_ids=[[int]])`` returning one float per
            completion (TRL's reward-function convention; accept ``**kwargs``), or None with a SharedBase built
            with a reward adapter.
        train_dataset: prompts: a list of strings or a ``datasets.Dataset`` with a ``prompt`` column (strings or
            chat messages) or an ``input_ids`` column.
        value_model: trainable one-label classifier (separate layout); default: a copy of ``reward_model``.
        reward_processing_class: the reward model's tokenizer when it differs from the policy's.
        metric_funcs: functions logged beside the reward but never optimised, with the reward-function
            signature ``fn(prompts=, completions=, completion_ids=)``; the mean of each is logged every update as
            ``rewards/<fn.__name__>/mean`` (GRPO's key for a reward function), e.g. a gold reward in the lab.
        callbacks, optimizers: as for ``transformers.Trainer``.
    """

    _tag_names = ["trl", "ppo", "rlhfkit"]

    def __init__(
        self,
        args: PPOConfig,
        processing_class,
        model,
        ref_model=None,
        reward_model=None,
        train_dataset=None,
        value_model=None,
        *,
        reward_processing_class=None,
        metric_funcs: Sequence[RewardFunction] | None = None,
        callbacks=None,
        optimizers=(None, None),
    ):
        if not isinstance(args, PPOConfig):
            raise ConfigError(f"args is a {type(args).__name__}; PPOTrainer needs a rlhfkit.ppo.PPOConfig")
        tok = processing_class
        if tok.pad_token_id is None or tok.pad_token_id == tok.eos_token_id:
            raise ConfigError(
                f"processing_class.pad_token_id ({tok.pad_token_id}) must differ from eos_token_id "
                f"({tok.eos_token_id}): PPO cannot tell padding from a finished response; fix it with rlhfkit.models."
                "prepare_tokenizer(tokenizer) then rlhfkit.models.sync_model_with_tokenizer(model, tokenizer)"
            )
        if train_dataset is None:
            raise ConfigError("train_dataset is required: a list of prompts or a Dataset with a 'prompt' column")
        self.reward_fn = None if reward_model is None or isinstance(reward_model, nn.Module) else reward_model
        self.reward_model = reward_model if isinstance(reward_model, nn.Module) else None
        self.reward_processing_class = reward_processing_class
        self.metric_funcs = list(metric_funcs or [])
        self.shared = model if isinstance(model, SharedBase) else None
        if self.shared is not None:
            if ref_model is not None or value_model is not None:
                raise ConfigError(
                    "ref_model and value_model must be None with a SharedBase: the reference is the base with "
                    "adapters disabled and the value model is its value adapter"
                )
            if reward_model is None and self.shared.reward_adapter is None:
                raise ConfigError(
                    "reward_model is None and the SharedBase has no reward adapter; pass reward_model (a model or a "
                    "function) or build_shared_base(..., reward_adapter=DIR)"
                )
            wrapper, self.ref_model, self.policy = model, None, model.model
            self._check_shared_frozen()
        else:
            is_peft = hasattr(model, "disable_adapter") and hasattr(model, "peft_config")
            if ref_model is None and not is_peft:
                raise ConfigError(
                    "ref_model is required for a full policy: pass a frozen copy of the SFT model "
                    "(AutoModelForCausalLM.from_pretrained(sft_path).requires_grad_(False)), or use a LoRA policy"
                )
            if ref_model is model:
                raise ConfigError(
                    "ref_model is the policy object itself; pass a separate frozen copy of the SFT model"
                )
            if reward_model is None:
                raise ConfigError("reward_model is required: a reward model or a reward function")
            if value_model is None:
                if self.reward_model is None:
                    raise ConfigError(
                        "value_model is required with a reward function: pass "
                        "AutoModelForSequenceClassification.from_pretrained(sft_path, num_labels=1)"
                    )
                value_model = copy.deepcopy(self.reward_model).requires_grad_(True)  # InstructGPT: V init from RM
            self.ref_model, self.policy = ref_model, model
            wrapper = PolicyAndValue(model, value_model)
            if ref_model is not None:
                _require_frozen(ref_model, "ref_model")
        for what, scorer in (("value_model", value_model), ("reward_model", self.reward_model)):
            labels = getattr(getattr(scorer, "config", None), "num_labels", 1)
            if labels != 1:
                raise ConfigError(
                    f"{what} has num_labels={labels}; PPO needs one scalar per token: load it with "
                    "AutoModelForSequenceClassification.from_pretrained(path, num_labels=1)"
                )
        if self.reward_model is not None:
            _require_frozen(self.reward_model, "reward_model")
        for module in (wrapper, self.ref_model, self.reward_model):
            if module is not None:
                _disable_dropout(module)

        self.stop_token_id = tok.eos_token_id if args.stop_token == "eos" else args.stop_token_id
        self.prompt_ids, self.prompt_texts = _tokenize_prompts(train_dataset, tok)
        # Chat prompts: RewardTrainer trained the reward model on the chat template's rendering, which may continue
        # after the EOS that ends the answer (Qwen: "<|im_end|>\n"); its score sits at that last token, so the
        # rollout scores finished answers with the same tokens appended.
        chat = _is_chat(train_dataset)
        self.score_suffix = _chat_suffix_ids(tok) if chat and self.stop_token_id == tok.eos_token_id else []

        super().__init__(model=wrapper, args=args, processing_class=tok, callbacks=callbacks, optimizers=optimizers)
        self.train_dataset = train_dataset
        self._check_no_parameter_sharding()

        # ---- batch sizes (TRL 1.12's names)
        world = self.accelerator.num_processes
        launched = int(os.environ.get("WORLD_SIZE", "1"))
        if world != launched:
            raise ConfigError(
                f"{launched} processes were launched (WORLD_SIZE) but the accelerator trains with {world}: each "
                "process would train its own copy and overwrite the others' files. On a machine without a GPU set "
                "use_cpu=True (PPOConfig's default None does) so torchrun starts gloo DDP"
            )
        self.local_batch_size = args.per_device_train_batch_size * args.gradient_accumulation_steps
        self.batch_size = self.local_batch_size * world
        self.local_mini_batch_size = self.local_batch_size // args.num_mini_batches
        if len(self.prompt_ids) < self.batch_size:
            raise ConfigError(
                f"train_dataset has {len(self.prompt_ids)} prompts, fewer than one batch ({self.batch_size} = "
                "per_device_train_batch_size * gradient_accumulation_steps * processes); add prompts or lower them"
            )
        total_episodes = args.total_episodes or int(args.num_train_epochs * len(self.prompt_ids))
        self.num_total_batches = math.ceil(total_episodes / self.batch_size)
        self.sample_every = (
            max(1, self.num_total_batches // args.num_sample_generations) if args.num_sample_generations else 0
        )

        # ---- optimiser, scheduler, devices
        if args.activation_checkpointing:  # transformers 5's name; `gradient_checkpointing` is its alias
            for m in _pretrained_models(wrapper):
                m.activation_checkpointing_enable(activation_checkpointing_kwargs=_checkpointing_kwargs(args))
        self.create_optimizer_and_scheduler(num_training_steps=self.num_total_batches)
        self.callback_handler.optimizer, self.callback_handler.lr_scheduler = self.optimizer, self.lr_scheduler
        self.model_wrapped, self.optimizer = self.accelerator.prepare(self.model, self.optimizer)
        for frozen in (self.ref_model, self.reward_model):
            if frozen is not None and not getattr(frozen, "is_quantized", False):
                frozen.to(self.accelerator.device)
        self.kl_ctl = (
            core.AdaptiveKLController(args.kl_coef, args.target_kl, args.kl_horizon)
            if args.target_kl is not None
            else core.FixedKLController(args.kl_coef)
        )
        self.generation_config = GenerationConfig(
            max_new_tokens=args.response_length,
            do_sample=True,
            temperature=args.temperature + 1e-7,
            # Set every knob that reshapes the sampling distribution: unset ones are filled from the model's own
            # generation_config (e.g. Qwen's top_k=20, repetition_penalty=1.05) and log-probs would then be wrong.
            top_k=0,
            top_p=1.0,
            min_p=0.0,
            typical_p=1.0,
            repetition_penalty=1.0,
            no_repeat_ngram_size=0,
            min_new_tokens=0,
            eos_token_id=self.stop_token_id if self.stop_token_id is not None else [],  # []: never stop early
            pad_token_id=tok.pad_token_id,
        )

    # ------------------------------------------------------------------------------------------ checks
    def _check_no_parameter_sharding(self) -> None:
        ds = self.accelerator.state.deepspeed_plugin if self.is_deepspeed_enabled else None
        refuse_parameter_sharding(self.is_fsdp_enabled, getattr(ds, "zero_stage", None))

    def _check_shared_frozen(self) -> None:
        shared = self.shared
        allowed = {
            id(p)
            for name in (shared.policy_adapter, shared.value_adapter)
            for _, p in _adapter_parameters(shared.model, name)
        }
        for name, p in shared.model.named_parameters():
            if p.requires_grad and id(p) not in allowed:
                raise ConfigError(
                    f"shared base weight {name!r} is trainable, but the reference (base) and reward adapter must stay "
                    "frozen; build the layout with rlhfkit.ppo.build_shared_base"
                )
        if shared.reward_head is not None:
            _require_frozen(shared.reward_head, "SharedBase.reward_head")

    # ------------------------------------------------------------------------------------------ rollout
    def _batch_prompts(self, update: int) -> list[int]:
        """Indices of this process's prompts for 0-based ``update``: a fresh seeded permutation per epoch."""
        per_epoch = len(self.prompt_ids) // self.batch_size
        epoch, pos = divmod(update, per_epoch)
        perm = torch.randperm(len(self.prompt_ids), generator=torch.Generator().manual_seed(self.args.seed + epoch))
        start = pos * self.batch_size + self.accelerator.process_index * self.local_batch_size
        return perm[start : start + self.local_batch_size].tolist()

    def _forward_inputs(self, queries, query_mask, responses, response_mask):
        input_ids = torch.cat([queries, responses], 1)
        attention_mask = torch.cat([query_mask, response_mask], 1).long()
        position_ids = (attention_mask.cumsum(1) - 1).clamp(min=0)
        return {"input_ids": input_ids, "attention_mask": attention_mask, "position_ids": position_ids}

    def _policy_logprobs(self, model, inputs, responses) -> torch.Tensor:
        R = responses.shape[1]
        logits = model(**inputs, logits_to_keep=R + 1, use_cache=False).logits[:, :-1]
        return core.logprobs_from_logits(logits / (self.args.temperature + 1e-7), responses)

    @torch.no_grad()
    def _rollout(self, indices: list[int]) -> dict[str, Any]:
        args, tok, device = self.args, self.processing_class, self.accelerator.device
        queries, query_mask = _left_pad([self.prompt_ids[i] for i in indices], tok.pad_token_id, device)
        P, chunk = queries.shape[1], args.local_rollout_forward_batch_size
        generated = []
        # Stay in train mode (dropout is off anyway): bitsandbytes repacks CPU 4-bit weights for inference in
        # eval mode, and backprop through repacked weights is wrong. Gradient checkpointing is paused instead, so
        # that generate can use its KV cache.
        with self.accelerator.autocast(), _no_gradient_checkpointing(self.model, _checkpointing_kwargs(args)):
            for s in range(0, len(indices), chunk):
                with self._as_policy():
                    out = self.policy.generate(
                        input_ids=queries[s : s + chunk],
                        attention_mask=query_mask[s : s + chunk],
                        generation_config=self.generation_config,
                    )
                generated.append(out[:, P:])
        R = max(g.shape[1] for g in generated)
        responses = torch.cat([nn.functional.pad(g, (0, R - g.shape[1]), value=tok.pad_token_id) for g in generated])
        responses, mask = core.truncate_at_stop_token(responses, self.stop_token_id, tok.pad_token_id)

        logprobs, ref_logprobs, values, model_scores = [], [], [], []
        with self.accelerator.autocast():
            for s in range(0, len(indices), chunk):
                sl = slice(s, s + chunk)
                inputs = self._forward_inputs(queries[sl], query_mask[sl], responses[sl], mask[sl])
                with self._as_policy():
                    logprobs.append(self._policy_logprobs(self.policy, inputs, responses[sl]))
                with self._as_reference() as ref:
                    ref_logprobs.append(self._policy_logprobs(ref, inputs, responses[sl]))
                values.append(self.model.values(**inputs)[:, P - 1 : -1])
                if self.reward_fn is None and self.reward_processing_class is None:
                    score_inputs, score_mask = inputs, mask[sl]
                    if self.score_suffix:
                        ext, score_mask = _append_after_stop(
                            responses[sl], mask[sl], self.stop_token_id, self.score_suffix, tok.pad_token_id
                        )
                        score_inputs = self._forward_inputs(queries[sl], query_mask[sl], ext, score_mask)
                    last = P + score_mask.sum(1) - 1
                    per_token = self._reward_per_token(score_inputs)
                    model_scores.append(per_token[torch.arange(len(last), device=device), last])

        completions = tok.batch_decode(responses.masked_fill(~mask, tok.pad_token_id), skip_special_tokens=True)
        prompts = [self.prompt_texts[i] for i in indices]
        if model_scores:
            scores = torch.cat(model_scores)
        else:
            scores = self._external_scores(prompts, completions, responses, mask).to(device)
        return {
            "queries": queries,
            "query_mask": query_mask,
            "responses": responses,
            "mask": mask,
            "logprobs": torch.cat(logprobs),
            "ref_logprobs": torch.cat(ref_logprobs),
            "values": torch.cat(values).float(),
            "raw_scores": scores.float(),
            "prompts": prompts,
            "completions": completions,
        }

    def _as_policy(self):
        if self.shared is not None:
            return use_adapter(self.shared.model, self.shared.policy_adapter)
        return contextlib.nullcontext()

    def _as_value(self):
        if self.shared is not None:
            return use_adapter(self.shared.model, self.shared.value_adapter)
        return contextlib.nullcontext()

    @contextlib.contextmanager
    def _as_reference(self):
        if self.ref_model is not None:
            yield self.ref_model
        else:
            with use_adapter(self.policy, None) as base:
                yield base

    def _reward_per_token(self, inputs) -> torch.Tensor:
        if self.reward_model is not None:
            return per_token_scores(*_backbone_and_head(self.reward_model), **inputs)
        return self.shared.rewards(**inputs)

    def _external_scores(self, prompts, completions, responses, mask) -> torch.Tensor:
        """Scores from the reward function, or from the reward model through its own tokenizer."""
        ids = [r[m].tolist() for r, m in zip(responses.cpu(), mask.cpu())]
        if self.reward_fn is not None:
            scores = self.reward_fn(prompts=prompts, completions=completions, completion_ids=ids)
            return torch.as_tensor([float(s) for s in scores], dtype=torch.float32)
        rtok = self.reward_processing_class
        ended = [bool(i) and i[-1] == self.stop_token_id for i in ids]
        texts = [
            p + c + (rtok.eos_token if e and rtok.eos_token else "") for p, c, e in zip(prompts, completions, ended)
        ]
        enc = rtok(texts, add_special_tokens=True)["input_ids"]
        x, m = _right_pad(enc, rtok.pad_token_id, self.accelerator.device)
        inputs = {"input_ids": x, "attention_mask": m.long(), "position_ids": (m.long().cumsum(1) - 1).clamp(min=0)}
        with torch.no_grad(), self.accelerator.autocast():
            per_token = self._reward_per_token(inputs)
        return per_token[torch.arange(len(enc)), m.sum(1) - 1].cpu()

    # ------------------------------------------------------------------------------------------ advantages
    def _advantages(self, batch: dict[str, Any]) -> dict[str, torch.Tensor]:
        args, mask = self.args, batch["mask"]
        scores = batch["raw_scores"]
        if args.reward_mean is not None:
            scores = (scores - args.reward_mean) / args.reward_std
        scores = core.apply_missing_eos_penalty(
            scores, batch["responses"], mask, self.processing_class.eos_token_id, args.missing_eos_penalty
        )
        kl = core.per_token_kl(batch["logprobs"], batch["ref_logprobs"], mask, args.kl_estimator)
        rewards, non_score = core.shape_rewards(scores, kl, mask, self.kl_ctl.value)
        if args.whiten_rewards:
            rewards = core.masked_whiten(rewards, mask, shift_mean=False)
        advantages, returns = core.compute_gae(rewards, batch["values"], mask, args.gamma, args.lam)
        advantages = core.masked_whiten(advantages, mask)
        return {"scores": scores, "kl": kl, "non_score": non_score, "advantages": advantages, "returns": returns}

    # ------------------------------------------------------------------------------------------ optimisation
    def _ppo_epochs(self, batch: dict[str, Any], adv: dict[str, torch.Tensor]) -> dict[str, list[float]]:
        args = self.args
        P, R = batch["queries"].shape[1], batch["responses"].shape[1]
        micro, mini = args.per_device_train_batch_size, self.local_mini_batch_size
        n_micro = mini // micro
        stats: dict[str, list[torch.Tensor]] = {
            k: [] for k in ("approxkl", "clipfrac", "pg", "vf", "vclip", "ent", "ratio")
        }
        for _ in range(args.num_ppo_epochs):
            order = torch.randperm(self.local_batch_size)
            for m0 in range(0, self.local_batch_size, mini):
                for j, u0 in enumerate(range(m0, m0 + mini, micro)):
                    idx = order[u0 : u0 + micro].to(self.accelerator.device)
                    mask, responses = batch["mask"][idx], batch["responses"][idx]
                    inputs = self._forward_inputs(batch["queries"][idx], batch["query_mask"][idx], responses, mask)
                    # Policy and value: separate forward + backward, each with its adapter active (shared base).
                    # Gradients are synchronised across processes once, at the last backward of the mini-batch.
                    with self._as_policy(), self.accelerator.no_sync(self.model_wrapped):
                        logits = self.model_wrapped(**inputs, logits_to_keep=R + 1, part="policy")[:, :-1]
                        logits = logits / (args.temperature + 1e-7)
                        new_logprobs = core.logprobs_from_logits(logits, responses)
                        pg_loss, clipfrac, approxkl = core.clipped_policy_loss(
                            new_logprobs, batch["logprobs"][idx], adv["advantages"][idx], mask, args.cliprange
                        )
                        self.accelerator.backward(pg_loss / n_micro)
                    sync = (
                        contextlib.nullcontext() if j == n_micro - 1 else self.accelerator.no_sync(self.model_wrapped)
                    )
                    with self._as_value(), sync:
                        vpred = self.model_wrapped(**inputs, part="value")[:, P - 1 : -1]
                        vf_loss, vclip = core.clipped_value_loss(
                            vpred, batch["values"][idx], adv["returns"][idx], mask, args.cliprange_value
                        )
                        self.accelerator.backward(args.vf_coef * vf_loss / n_micro)
                    with torch.no_grad():
                        ratio = core.masked_mean(torch.exp(new_logprobs - batch["logprobs"][idx]), mask)
                        entropy = core.masked_mean(core.entropy_from_logits(logits), mask)
                    for k, v in zip(stats, (approxkl, clipfrac, pg_loss, vf_loss, vclip, entropy, ratio)):
                        stats[k].append(v.detach().float())
                if args.max_grad_norm and args.max_grad_norm > 0:
                    self.accelerator.clip_grad_norm_(self.model.parameters(), args.max_grad_norm)
                self.optimizer.step()
                self.optimizer.zero_grad(set_to_none=True)
        return {k: torch.stack(v) for k, v in stats.items()}

    # ------------------------------------------------------------------------------------------ train
    def train(self, resume_from_checkpoint: str | bool | None = None, **kwargs):
        """Run ``ceil(total_episodes / batch_size)`` PPO updates; resume from a checkpoint folder or True (last)."""
        from transformers.trainer_utils import TrainOutput, get_last_checkpoint

        args = self.args
        if resume_from_checkpoint is True:
            resume_from_checkpoint = get_last_checkpoint(args.output_dir)
            if resume_from_checkpoint is None:
                raise ConfigError(f"resume_from_checkpoint=True but {args.output_dir!r} has no checkpoint-N folder")
        if resume_from_checkpoint:
            self._load_ppo_checkpoint(str(resume_from_checkpoint))
        else:
            self.state.global_step = 0
        self.state.max_steps = self.num_total_batches
        self.state.num_train_epochs = self.num_total_batches * self.batch_size / len(self.prompt_ids)
        self.state.train_batch_size = self.batch_size
        for name in ("logging_steps", "save_steps", "eval_steps"):
            value = getattr(args, name) or 1
            setattr(self.state, name, math.ceil(self.num_total_batches * value) if value < 1 else int(value))
        self.control = self.callback_handler.on_train_begin(args, self.state, self.control)
        if resume_from_checkpoint:
            self._load_rng_state(str(resume_from_checkpoint))  # last: nothing may draw random numbers after it

        start_time, start_step, losses = time.time(), self.state.global_step, []
        self.model.train()
        for update in range(self.state.global_step, self.num_total_batches):
            self.control = self.callback_handler.on_step_begin(args, self.state, self.control)
            batch = self._rollout(self._batch_prompts(update))
            adv = self._advantages(batch)
            stats = self._ppo_epochs(batch, adv)
            metrics = self._metrics(batch, adv, stats, start_time, start_step)
            losses.append(metrics["loss/policy_avg"] + args.vf_coef * metrics["loss/value_avg"])
            self.lr_scheduler.step()
            self.kl_ctl.update(metrics["objective/kl"], self.batch_size)
            self.state.global_step += 1
            self.state.epoch = self.state.global_step * self.batch_size / len(self.prompt_ids)
            if self.sample_every and (update % self.sample_every == 0):
                self._log_samples(batch, adv["scores"])

            self.control = self.callback_handler.on_step_end(args, self.state, self.control)
            if self.control.should_log:
                self.log(metrics)
            if self.control.should_save:
                self._save_checkpoint(self.model, trial=None)
                self.control = self.callback_handler.on_save(args, self.state, self.control)
            if self.control.should_training_stop:
                break

        self.control = self.callback_handler.on_train_end(args, self.state, self.control)
        runtime = time.time() - start_time
        return TrainOutput(
            self.state.global_step,
            sum(losses) / max(len(losses), 1),
            {"train_runtime": runtime, "train_steps_per_second": len(losses) / max(runtime, 1e-9)},
        )

    def _metrics(self, batch, adv, stats, start_time, start_step) -> dict[str, float]:
        mask, kl, non_score, scores = batch["mask"], adv["kl"], adv["non_score"], adv["scores"]
        mean_kl = kl.sum(1).mean()
        mean_non_score = non_score.sum(1).mean()
        eos = self.processing_class.eos_token_id
        local = {
            "objective/kl": mean_kl,
            "objective/entropy": (-batch["logprobs"] * mask).sum(1).mean(),
            "objective/non_score_reward": mean_non_score,
            "objective/rlhf_reward": mean_non_score + scores.mean(),
            "objective/scores": scores.mean(),
            "policy/approxkl_avg": stats["approxkl"].mean(),
            "policy/clipfrac_avg": stats["clipfrac"].mean(),
            "loss/policy_avg": stats["pg"].mean(),
            "loss/value_avg": stats["vf"].mean(),
            "val/clipfrac_avg": stats["vclip"].mean(),
            "policy/entropy_avg": stats["ent"].mean(),
            "val/ratio": stats["ratio"].mean(),
            "val/ratio_var": stats["ratio"].var() if len(stats["ratio"]) > 1 else torch.zeros(()),
            "val/num_eos_tokens": ((batch["responses"] == eos) & mask).sum().float(),
            "completions/mean_length": mask.sum(1).float().mean(),
        }
        if self.metric_funcs:
            ids = [r[m].tolist() for r, m in zip(batch["responses"].cpu(), mask.cpu())]
            for fn in self.metric_funcs:
                values = fn(prompts=batch["prompts"], completions=batch["completions"], completion_ids=ids)
                local[f"rewards/{fn.__name__}/mean"] = torch.as_tensor([float(v) for v in values]).mean()
        values = torch.stack([v.detach().float().to(self.accelerator.device) for v in local.values()])
        gathered = self.accelerator.gather_for_metrics(values[None]).reshape(-1, len(local)).mean(0).tolist()
        metrics = dict(zip(local, gathered))
        episode = (self.state.global_step + 1) * self.batch_size
        metrics["val/num_eos_tokens"] *= self.accelerator.num_processes  # TRL: a total, not a mean
        metrics.update(
            {
                "objective/kl_coef": self.kl_ctl.value,
                "lr": self.lr_scheduler.get_last_lr()[0],
                "episode": episode,
                "eps": (episode - start_step * self.batch_size) / max(time.time() - start_time, 1e-9),
            }
        )
        return metrics

    def _log_samples(self, batch, scores, n: int = 3) -> None:
        if not self.accelerator.is_main_process:
            return
        for p, c, s in list(zip(batch["prompts"], batch["completions"], scores.tolist()))[:n]:
            logger.info("step %d sample | score %.3f | %r -> %r", self.state.global_step, s, p, c)

    # ------------------------------------------------------------------------------------------ save / resume
    def save_model(self, output_dir: str | None = None, _internal_call: bool = False) -> None:
        """Checkpoints (internal calls): every trainable tensor, for exact resume. Otherwise: the final policy
        (the full model, or the policy LoRA adapter for peft policies) + tokenizer, as safetensors."""
        output_dir = output_dir or self.args.output_dir
        if not self.args.should_save:
            return
        os.makedirs(output_dir, exist_ok=True)
        if _internal_call:
            from safetensors.torch import save_file

            state = {n: p.detach().cpu().contiguous() for n, p in self.model.named_parameters() if p.requires_grad}
            save_file(state, os.path.join(output_dir, TRAINABLE_WEIGHTS_NAME), metadata={"format": "pt"})
            return
        policy = self.accelerator.unwrap_model(self.model).policy if self.shared is None else self.shared.model
        if self.shared is not None:
            policy.save_pretrained(output_dir, selected_adapters=[self.shared.policy_adapter])
        else:
            policy.save_pretrained(output_dir)
        self.processing_class.save_pretrained(output_dir)

    def _save_checkpoint(self, model, trial) -> None:
        super()._save_checkpoint(model, trial)
        if self.args.should_save:
            folder = os.path.join(self.args.output_dir, f"checkpoint-{self.state.global_step}")
            with open(os.path.join(folder, PPO_STATE_NAME), "w") as f:
                json.dump({"kl_ctl": self.kl_ctl.state_dict()}, f)

    def _load_ppo_checkpoint(self, checkpoint: str) -> None:
        from safetensors.torch import load_file
        from transformers import TrainerState

        path = os.path.join(checkpoint, TRAINABLE_WEIGHTS_NAME)
        if not os.path.isfile(path):
            raise ConfigError(
                f"resume_from_checkpoint={checkpoint!r} has no {TRAINABLE_WEIGHTS_NAME}; give a PPO checkpoint-N"
            )
        weights = load_file(path, device=str(self.accelerator.device))
        result = self.model.load_state_dict(weights, strict=False)
        trainable = {n for n, p in self.model.named_parameters() if p.requires_grad}
        if result.unexpected_keys or trainable - set(weights):
            raise ConfigError(
                f"checkpoint {checkpoint!r} does not match this model layout (unexpected "
                f"{result.unexpected_keys[:2]}, missing {sorted(trainable - set(weights))[:2]}); "
                "resume with the same models and layout"
            )
        self._load_optimizer_and_scheduler(checkpoint)
        self.state = TrainerState.load_from_json(os.path.join(checkpoint, "trainer_state.json"))
        with open(os.path.join(checkpoint, PPO_STATE_NAME)) as f:
            self.kl_ctl.load_state_dict(json.load(f)["kl_ctl"])
        self._load_callback_state()


# ============================================================================================== helpers
def refuse_parameter_sharding(fsdp: bool, zero_stage: int | None) -> None:
    """Refuse FSDP and DeepSpeed ZeRO-3: every rollout generates with the whole policy, which would have to be
    gathered from its shards each time (not implemented); DDP and ZeRO-1/2 keep full parameters on each GPU."""
    if fsdp or zero_stage == 3:
        raise ConfigError(
            f"PPOTrainer does not support {'FSDP' if fsdp else 'DeepSpeed ZeRO-3'}: rollouts generate with the whole "
            "policy on each GPU; launch with configs/accelerate/multi_gpu.yaml or zero2.yaml, and fit large models "
            "with preset qlora (shared-base layout) instead of sharding"
        )


def _require_frozen(module: nn.Module, what: str) -> None:
    trainable = [n for n, p in module.named_parameters() if p.requires_grad]
    if trainable:
        raise ConfigError(
            f"{what} has {len(trainable)} trainable tensors (e.g. {trainable[0]!r}) but must stay frozen; "
            f"call {what}.requires_grad_(False) before building PPOTrainer"
        )


def _disable_dropout(module: nn.Module) -> None:
    """Dropout off everywhere (TRL 1.12): rollout log-probs must equal the first PPO epoch's log-probs."""
    for m in module.modules():
        if isinstance(m, nn.Dropout):
            m.p = 0.0
        if isinstance(getattr(m, "attention_dropout", None), float):  # functional attention dropout (Llama, Qwen)
            m.attention_dropout = 0.0


def _pretrained_models(wrapper: nn.Module) -> list[nn.Module]:
    if isinstance(wrapper, SharedBase):
        return [wrapper.model.get_base_model()]
    return [m.get_base_model() if hasattr(m, "get_base_model") else m for m in (wrapper.policy, wrapper.value_model)]


@contextlib.contextmanager
def _no_gradient_checkpointing(wrapper: nn.Module, checkpointing_kwargs: dict[str, Any]) -> Iterator[None]:
    paused = [m for m in _pretrained_models(wrapper) if m.is_activation_checkpointing]
    for m in paused:
        m.activation_checkpointing_disable()
    try:
        yield
    finally:
        for m in paused:
            m.activation_checkpointing_enable(activation_checkpointing_kwargs=checkpointing_kwargs)


def _checkpointing_kwargs(args) -> dict[str, Any]:
    # Non-reentrant checkpointing: works with frozen inputs (LoRA on a frozen base) without enable_input_require_grads.
    return {"use_reentrant": False, **(args.activation_checkpointing_kwargs or {})}


def _tokenize_prompts(dataset, tokenizer) -> tuple[list[list[int]], list[str]]:
    """Prompts -> (token ids, texts). Accepts a list of strings or a Dataset with ``prompt`` or ``input_ids``."""
    if isinstance(dataset, (list, tuple)):
        rows: Sequence = [{"prompt": p} for p in dataset]
        columns = {"prompt"}
    else:
        rows, columns = dataset, set(dataset.column_names)
    if "input_ids" in columns:
        ids = [list(r["input_ids"]) for r in rows]
        return ids, tokenizer.batch_decode(ids, skip_special_tokens=True)
    if "prompt" not in columns:
        raise ConfigError(f"train_dataset has columns {sorted(columns)}; it needs a 'prompt' or 'input_ids' column")
    ids, texts = [], []
    for r in rows:
        prompt = r["prompt"]
        if isinstance(prompt, str):
            texts.append(prompt)
            ids.append(tokenizer(prompt)["input_ids"])
        else:  # chat messages
            text = tokenizer.apply_chat_template(prompt, tokenize=False, add_generation_prompt=True)
            texts.append(text)
            ids.append(tokenizer(text, add_special_tokens=False)["input_ids"])
    if any(len(i) == 0 for i in ids):
        raise ConfigError("train_dataset has an empty prompt; remove it (PPO needs at least one prompt token)")
    return ids, texts


def _is_chat(dataset) -> bool:
    """Whether the prompts are chat messages (lists of role/content dicts) rather than text or token ids."""
    if isinstance(dataset, (list, tuple)):
        first = dataset[0] if dataset else ""
    else:
        first = dataset[0]["prompt"] if "prompt" in dataset.column_names and len(dataset) else ""
    return not isinstance(first, str)


def _chat_suffix_ids(tokenizer) -> list[int]:
    """Token ids the chat template puts after the EOS that ends an assistant turn (Qwen: "\n"; Llama 3: none)."""
    messages = [{"role": "user", "content": "x"}, {"role": "assistant", "content": "y"}]
    rendered = tokenizer.apply_chat_template(messages, tokenize=False)
    end = rendered.rfind(tokenizer.eos_token) if tokenizer.eos_token else -1
    suffix = rendered[end + len(tokenizer.eos_token) :] if end >= 0 else ""
    return list(tokenizer(suffix, add_special_tokens=False)["input_ids"]) if suffix else []


def _append_after_stop(responses, mask, stop_token_id, suffix: list[int], pad: int):
    """Right-padded ``responses`` with ``suffix`` appended to the rows that end with the stop token; new mask."""
    lengths = mask.sum(1)
    ended = (lengths > 0) & (responses.gather(1, (lengths - 1).clamp(min=0)[:, None])[:, 0] == stop_token_id)
    ext = nn.functional.pad(responses.masked_fill(~mask, pad), (0, len(suffix)), value=pad)
    positions = lengths[:, None] + torch.arange(len(suffix), device=responses.device)[None]
    rows = ended.nonzero()[:, 0]
    ext[rows[:, None], positions[rows]] = torch.tensor(suffix, device=responses.device)
    new_lengths = lengths + ended.long() * len(suffix)
    new_mask = torch.arange(ext.shape[1], device=responses.device)[None] < new_lengths[:, None]
    return ext, new_mask


def _left_pad(seqs: list[list[int]], pad: int, device) -> tuple[torch.Tensor, torch.Tensor]:
    L = max(len(s) for s in seqs)
    ids = torch.full((len(seqs), L), pad, dtype=torch.long)
    mask = torch.zeros((len(seqs), L), dtype=torch.bool)
    for i, s in enumerate(seqs):
        ids[i, L - len(s) :] = torch.tensor(s, dtype=torch.long)
        mask[i, L - len(s) :] = True
    return ids.to(device), mask.to(device)


def _right_pad(seqs: list[list[int]], pad: int, device) -> tuple[torch.Tensor, torch.Tensor]:
    L = max(len(s) for s in seqs)
    ids = torch.full((len(seqs), L), pad, dtype=torch.long)
    mask = torch.zeros((len(seqs), L), dtype=torch.bool)
    for i, s in enumerate(seqs):
        ids[i, : len(s)] = torch.tensor(s, dtype=torch.long)
        mask[i, : len(s)] = True
    return ids.to(device), mask.to(device)

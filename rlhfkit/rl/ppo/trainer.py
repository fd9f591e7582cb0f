"""The PPO loop: :class:`PPOTrainer`, a ``transformers.Trainer`` whose ``train`` is PPO (TRL 1.12's design).

One update: :meth:`PPOTrainer._rollout` samples and scores a :class:`~rlhfkit.rl.ppo.rollout.Rollout`,
:meth:`PPOTrainer._advantages` turns it into :class:`~rlhfkit.rl.ppo.rollout.Advantages`,
:meth:`PPOTrainer._ppo_epochs` optimises the policy and value on both, and :meth:`PPOTrainer._metrics` logs TRL 1.12's
metric names, plus where the update's time went (this process's seconds): ``time/generation`` (sampling),
``time/rollout`` (sampling and scoring) and ``time/ppo_epochs`` (advantages and the optimisation). The math lives in
:mod:`rlhfkit.rl.ppo.core`; what PPO supports, assumes and leaves out is in :mod:`rlhfkit.rl.ppo`'s docstring.
"""

from __future__ import annotations

import contextlib
import copy
import logging
import math
import os
import time
from collections.abc import Callable, Sequence

import torch
from torch import nn
from transformers import Trainer, TrainerState
from transformers.trainer_utils import TrainOutput, get_last_checkpoint

from rlhfkit.core.errors import ConfigError
from rlhfkit.models.scoring import ENSEMBLE_STD_KEY, encode, resolve_pad_token_id, score_token_ids
from rlhfkit.rl.ppo import core
from rlhfkit.rl.ppo.checkpoint import load_kl_controller, load_trainable, save_kl_controller, save_trainable
from rlhfkit.rl.ppo.config import PPOConfig
from rlhfkit.rl.ppo.layouts import (
    PolicyAndValue,
    SharedBase,
    _backbone_and_head,
    activation_checkpointing_paused,
    check_shared_frozen,
    disable_dropout,
    enable_activation_checkpointing,
    per_token_scores,
    require_frozen,
    use_adapter,
)
from rlhfkit.rl.ppo.rollout import (
    Advantages,
    Rollout,
    append_after_stop,
    chat_suffix_ids,
    forward_inputs,
    is_chat,
    left_pad,
    sampling_config,
    tokenize_prompts,
)

logger = logging.getLogger(__name__)


RewardFunction = Callable[..., Sequence[float]]
# What each PPO micro-batch reports (``_micro_step``), in order: approximate KL to the rollout policy, fraction of
# clipped policy ratios, policy loss, value loss, fraction of clipped values, entropy, mean probability ratio.
STAT_NAMES = ("approxkl", "clipfrac", "pg", "vf", "vclip", "ent", "ratio")


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
        _check_args(args, processing_class, train_dataset)
        self.reward_fn = None if reward_model is None or isinstance(reward_model, nn.Module) else reward_model
        self.reward_model = reward_model if isinstance(reward_model, nn.Module) else None
        self.reward_processing_class = reward_processing_class
        self.metric_funcs = list(metric_funcs or [])
        self._ensemble_std: list[torch.Tensor] = []  # a shared base's reward ensemble: members' spread per answer
        self._generation_seconds = 0.0  # the last rollout's sampling time (logged as time/generation)
        self.shared = model if isinstance(model, SharedBase) else None
        if self.shared is not None:
            wrapper = self._shared_layout(ref_model, reward_model, value_model)
        else:
            wrapper = self._separate_layout(model, ref_model, reward_model, value_model)
        self._check_reward_model()
        for module in (wrapper, self.ref_model, self.reward_model):
            if module is not None:
                disable_dropout(module)
        self._read_prompts(args, processing_class, train_dataset)

        super().__init__(
            model=wrapper, args=args, processing_class=processing_class, callbacks=callbacks, optimizers=optimizers
        )
        self.train_dataset = train_dataset
        self._check_no_parameter_sharding()
        self._set_batch_sizes()
        self._prepare_optimisation(wrapper)
        self.kl_ctl = (
            core.AdaptiveKLController(args.kl_coef, args.target_kl, args.kl_horizon)
            if args.target_kl is not None
            else core.FixedKLController(args.kl_coef)
        )
        self.generation_config = sampling_config(args, self.stop_token_id, processing_class.pad_token_id)

    # ------------------------------------------------------------------------------------------ set-up steps
    def _shared_layout(self, ref_model, reward_model, value_model) -> SharedBase:
        """Shared base: the reference is the base with adapters disabled, the value model its value adapter."""
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
        self.ref_model, self.policy = None, self.shared.model
        check_shared_frozen(self.shared)
        return self.shared

    def _separate_layout(self, model, ref_model, reward_model, value_model) -> PolicyAndValue:
        """Separate models: a frozen reference (or a peft policy's base) and a trainable value model."""
        is_peft = hasattr(model, "disable_adapter") and hasattr(model, "peft_config")
        if ref_model is None and not is_peft:
            raise ConfigError(
                "ref_model is required for a full policy: pass a frozen copy of the SFT model "
                "(AutoModelForCausalLM.from_pretrained(sft_path).requires_grad_(False)), or use a LoRA policy"
            )
        if ref_model is model:
            raise ConfigError("ref_model is the policy object itself; pass a separate frozen copy of the SFT model")
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
        if ref_model is not None:
            require_frozen(ref_model, "ref_model")
        _require_one_label(value_model, "value_model")
        return PolicyAndValue(model, value_model)

    def _check_reward_model(self) -> None:
        if self.reward_model is not None:
            _require_one_label(self.reward_model, "reward_model")
            require_frozen(self.reward_model, "reward_model")

    def _read_prompts(self, args: PPOConfig, tok, train_dataset) -> None:
        """Prompt token ids and texts, the stop token, and the tokens scored after a chat answer's EOS."""
        self.stop_token_id = tok.eos_token_id if args.stop_token == "eos" else args.stop_token_id
        self.prompt_ids, self.prompt_texts = tokenize_prompts(train_dataset, tok)
        # Chat prompts: RewardTrainer trained the reward model on the chat template's rendering, which may continue
        # after the EOS that ends the answer (Qwen: "<|im_end|>\n"); its score sits at that last token, so the
        # rollout scores finished answers with the same tokens appended.
        chat = is_chat(train_dataset)
        self.score_suffix = chat_suffix_ids(tok) if chat and self.stop_token_id == tok.eos_token_id else []

    def _set_batch_sizes(self) -> None:
        """TRL 1.12's batch sizes: ``local_batch_size`` prompts per process and update, ``batch_size`` in all."""
        args, world = self.args, self.accelerator.num_processes
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

    def _prepare_optimisation(self, wrapper: nn.Module) -> None:
        """Activation checkpointing, optimiser and scheduler, the trained wrapper prepared, frozen models moved."""
        args = self.args
        if args.activation_checkpointing:  # transformers 5's name; `gradient_checkpointing` is its alias
            enable_activation_checkpointing(wrapper, args.activation_checkpointing_kwargs)
        self.create_optimizer_and_scheduler(num_training_steps=self.num_total_batches)
        self.callback_handler.optimizer, self.callback_handler.lr_scheduler = self.optimizer, self.lr_scheduler
        self.model_wrapped, self.optimizer = self.accelerator.prepare(self.model, self.optimizer)
        for frozen in (self.ref_model, self.reward_model):
            if frozen is not None and not getattr(frozen, "is_quantized", False):
                frozen.to(self.accelerator.device)

    def _check_no_parameter_sharding(self) -> None:
        ds = self.accelerator.state.deepspeed_plugin if self.is_deepspeed_enabled else None
        refuse_parameter_sharding(self.is_fsdp_enabled, getattr(ds, "zero_stage", None))

    # ------------------------------------------------------------------------------------------ rollout
    def _batch_prompts(self, update: int) -> list[int]:
        """Indices of this process's prompts for 0-based ``update``: a fresh seeded permutation per epoch."""
        per_epoch = len(self.prompt_ids) // self.batch_size
        epoch, pos = divmod(update, per_epoch)
        perm = torch.randperm(len(self.prompt_ids), generator=torch.Generator().manual_seed(self.args.seed + epoch))
        start = pos * self.batch_size + self.accelerator.process_index * self.local_batch_size
        return perm[start : start + self.local_batch_size].tolist()

    def _policy_logprobs(self, model, inputs, responses) -> torch.Tensor:
        R = responses.shape[1]
        logits = model(**inputs, logits_to_keep=R + 1, use_cache=False).logits[:, :-1]
        return core.logprobs_from_logits(logits / (self.args.temperature + 1e-7), responses)

    @torch.no_grad()
    def _rollout(self, indices: list[int]) -> Rollout:
        """Sample responses to this process's prompts ``indices`` and score them: what the PPO epochs hold fixed."""
        tok, device = self.processing_class, self.accelerator.device
        queries, query_mask = left_pad([self.prompt_ids[i] for i in indices], tok.pad_token_id, device)
        self._ensemble_std = []
        responses, mask = self._generate(queries, query_mask)
        logprobs, ref_logprobs, values, model_scores = self._forward_passes(queries, query_mask, responses, mask)
        completions = tok.batch_decode(responses.masked_fill(~mask, tok.pad_token_id), skip_special_tokens=True)
        prompts = [self.prompt_texts[i] for i in indices]
        if model_scores is not None:
            scores = model_scores
        else:
            scores = self._external_scores(prompts, completions, responses, mask).to(device)
        return Rollout(
            queries=queries,
            query_mask=query_mask,
            responses=responses,
            mask=mask,
            logprobs=logprobs,
            ref_logprobs=ref_logprobs,
            values=values.float(),
            raw_scores=scores.float(),
            prompts=prompts,
            completions=completions,
        )

    def _generate(self, queries: torch.Tensor, query_mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Sample from the policy, ``local_rollout_forward_batch_size`` prompts at a time.

        Returns:
            (responses `(B, R)`, mask `(B, R)` bool): cut after the stop token and right-padded with the pad token.
        """
        args, pad = self.args, self.processing_class.pad_token_id
        P, chunk = queries.shape[1], args.local_rollout_forward_batch_size
        generated = []
        # Stay in train mode (dropout is off anyway): bitsandbytes repacks CPU 4-bit weights for inference in
        # eval mode, and backprop through repacked weights is wrong. Gradient checkpointing is paused instead, so
        # that generate can use its KV cache.
        no_checkpointing = activation_checkpointing_paused(self.model, args.activation_checkpointing_kwargs)
        started = time.perf_counter()  # generate waits for the GPU at each token (its stopping check)
        with self.accelerator.autocast(), no_checkpointing:
            for s in range(0, len(queries), chunk):
                with self._as_policy():
                    out = self.policy.generate(
                        input_ids=queries[s : s + chunk],
                        attention_mask=query_mask[s : s + chunk],
                        generation_config=self.generation_config,
                    )
                generated.append(out[:, P:])
        self._generation_seconds = time.perf_counter() - started
        R = max(g.shape[1] for g in generated)
        responses = torch.cat([nn.functional.pad(g, (0, R - g.shape[1]), value=pad) for g in generated])
        return core.truncate_at_stop_token(responses, self.stop_token_id, pad)

    def _forward_passes(self, queries, query_mask, responses, mask):
        """Forward passes over prompt + response, ``local_rollout_forward_batch_size`` rows at a time.

        Returns:
            (logprobs `(B, R)`, ref_logprobs `(B, R)`, values `(B, R)`, scores `(B,)` or None): the policy's and
            the reference's log-probs of the response tokens, the value estimates before each of them, and the
            reward model's scores when it reads the policy's tokens (None for a reward function or a reward model
            with its own tokenizer: :meth:`_external_scores`).
        """
        P, chunk = queries.shape[1], self.args.local_rollout_forward_batch_size
        logprobs, ref_logprobs, values, scores = [], [], [], []
        with self.accelerator.autocast():
            for s in range(0, len(queries), chunk):
                sl = slice(s, s + chunk)
                inputs = forward_inputs(queries[sl], query_mask[sl], responses[sl], mask[sl])
                with self._as_policy():
                    logprobs.append(self._policy_logprobs(self.policy, inputs, responses[sl]))
                with self._as_reference() as ref:
                    ref_logprobs.append(self._policy_logprobs(ref, inputs, responses[sl]))
                values.append(self.model.values(**inputs)[:, P - 1 : -1])
                if self.reward_fn is None and self.reward_processing_class is None:
                    scores.append(self._model_scores(queries[sl], query_mask[sl], responses[sl], mask[sl], inputs))
        return torch.cat(logprobs), torch.cat(ref_logprobs), torch.cat(values), torch.cat(scores) if scores else None

    def _model_scores(self, queries, query_mask, responses, mask, inputs) -> torch.Tensor:
        """The reward model's scores `(B,)` of prompt + response (``inputs``), read at the last real token; finished
        chat answers get the template's tokens after the EOS first, as RewardTrainer scored them."""
        score_inputs, score_mask = inputs, mask
        if self.score_suffix:
            pad = self.processing_class.pad_token_id
            ext, score_mask = append_after_stop(responses, mask, self.stop_token_id, self.score_suffix, pad)
            score_inputs = forward_inputs(queries, query_mask, ext, score_mask)
        last = queries.shape[1] + score_mask.sum(1) - 1
        per_token = self._reward_per_token(score_inputs)
        rows = torch.arange(len(last), device=self.accelerator.device)
        if self.reward_model is None and len(self.shared.reward_adapters) > 1:
            self._ensemble_std.append(self.shared.last_member_scores[:, rows, last].std(0, correction=0))
        return per_token[rows, last]

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
        """Scores from the reward function, or from the reward model through its own tokenizer.

        The reward model's text is ``prompt + completion`` formatted by :func:`rlhfkit.models.scoring.encode` (its
        tokenizer's EOS appended only after an answer that ended with the stop token: one cut off is scored at its
        last token, as the in-rollout path scores it) and scored by :func:`rlhfkit.models.scoring.score_token_ids`.
        """
        ids = [r[m].tolist() for r, m in zip(responses.cpu(), mask.cpu())]
        if self.reward_fn is not None:
            scores = self.reward_fn(prompts=prompts, completions=completions, completion_ids=ids)
            return torch.as_tensor([float(s) for s in scores], dtype=torch.float32)
        if self.reward_model is None:
            raise ConfigError(
                "reward_processing_class is set but the reward comes from the SharedBase's reward adapter, which "
                "shares the policy's tokenizer; pass reward_processing_class=None"
            )
        rtok = self.reward_processing_class
        ended = [bool(i) and i[-1] == self.stop_token_id for i in ids]
        encoded = [encode(rtok, p + c, eos=e) for p, c, e in zip(prompts, completions, ended)]
        pad = resolve_pad_token_id(self.reward_model, rtok)
        with self.accelerator.autocast():
            scores = score_token_ids(
                self.reward_model, encoded, pad_token_id=pad, batch_size=self.args.local_rollout_forward_batch_size
            )
        return torch.as_tensor(scores, dtype=torch.float32)

    # ------------------------------------------------------------------------------------------ advantages
    def _advantages(self, rollout: Rollout) -> Advantages:
        """Scores (normalised, missing-EOS penalty) -> per-token KL-shaped rewards -> GAE, whitened."""
        args, mask = self.args, rollout.mask
        scores = rollout.raw_scores
        if args.reward_mean is not None:
            scores = (scores - args.reward_mean) / args.reward_std
        scores = core.apply_missing_eos_penalty(
            scores, rollout.responses, mask, self.processing_class.eos_token_id, args.missing_eos_penalty
        )
        kl = core.per_token_kl(rollout.logprobs, rollout.ref_logprobs, mask, args.kl_estimator)
        rewards, non_score = core.shape_rewards(scores, kl, mask, self.kl_ctl.value)
        if args.whiten_rewards:
            rewards = core.masked_whiten(rewards, mask, shift_mean=False)
        advantages, returns = core.compute_gae(rewards, rollout.values, mask, args.gamma, args.lam)
        advantages = core.masked_whiten(advantages, mask)
        return Advantages(scores=scores, kl=kl, non_score=non_score, advantages=advantages, returns=returns)

    # ------------------------------------------------------------------------------------------ optimisation
    def _ppo_epochs(self, rollout: Rollout, adv: Advantages) -> dict[str, torch.Tensor]:
        """``num_ppo_epochs`` passes over ``num_mini_batches`` shuffled mini-batches, one optimiser step each.

        Returns:
            :data:`STAT_NAMES` -> `(num_ppo_epochs * local_batch_size / per_device_train_batch_size,)`: one value
            per micro-batch.
        """
        args = self.args
        micro, mini = args.per_device_train_batch_size, self.local_mini_batch_size
        n_micro = mini // micro
        stats: dict[str, list[torch.Tensor]] = {k: [] for k in STAT_NAMES}
        for _ in range(args.num_ppo_epochs):
            order = torch.randperm(self.local_batch_size)
            for m0 in range(0, self.local_batch_size, mini):
                for j, u0 in enumerate(range(m0, m0 + mini, micro)):
                    idx = order[u0 : u0 + micro].to(self.accelerator.device)
                    for k, v in zip(STAT_NAMES, self._micro_step(rollout, adv, idx, n_micro, sync=j == n_micro - 1)):
                        stats[k].append(v.detach().float())
                if args.max_grad_norm and args.max_grad_norm > 0:
                    self.accelerator.clip_grad_norm_(self.model.parameters(), args.max_grad_norm)
                self.optimizer.step()
                self.optimizer.zero_grad(set_to_none=True)
        return {k: torch.stack(v) for k, v in stats.items()}

    def _micro_step(self, rollout: Rollout, adv: Advantages, idx: torch.Tensor, n_micro: int, sync: bool):
        """Policy and value losses on rows ``idx`` of the rollout, backpropagated (scaled by ``1 / n_micro``);
        gradients are synchronised across processes when ``sync`` (the mini-batch's last micro-batch).

        Returns:
            the micro-batch's :data:`STAT_NAMES`, each a scalar tensor.
        """
        args, P, R = self.args, rollout.queries.shape[1], rollout.responses.shape[1]
        mask, responses, old_logprobs = rollout.mask[idx], rollout.responses[idx], rollout.logprobs[idx]
        inputs = forward_inputs(rollout.queries[idx], rollout.query_mask[idx], responses, mask)
        # Policy and value: separate forward + backward, each with its adapter active (shared base).
        with self._as_policy(), self.accelerator.no_sync(self.model_wrapped):
            logits = self.model_wrapped(**inputs, logits_to_keep=R + 1, part="policy")[:, :-1]
            logits = logits / (args.temperature + 1e-7)
            new_logprobs = core.logprobs_from_logits(logits, responses)
            pg_loss, clipfrac, approxkl = core.clipped_policy_loss(
                new_logprobs, old_logprobs, adv.advantages[idx], mask, args.cliprange
            )
            self.accelerator.backward(pg_loss / n_micro)
        with self._as_value(), contextlib.nullcontext() if sync else self.accelerator.no_sync(self.model_wrapped):
            vpred = self.model_wrapped(**inputs, part="value")[:, P - 1 : -1]
            vf_loss, vclip = core.clipped_value_loss(
                vpred, rollout.values[idx], adv.returns[idx], mask, args.cliprange_value
            )
            self.accelerator.backward(args.vf_coef * vf_loss / n_micro)
        with torch.no_grad():
            ratio = core.masked_mean(torch.exp(new_logprobs - old_logprobs), mask)
            entropy = core.masked_mean(core.entropy_from_logits(logits), mask)
        return approxkl, clipfrac, pg_loss, vf_loss, vclip, entropy, ratio

    # ------------------------------------------------------------------------------------------ train
    def train(self, resume_from_checkpoint: str | bool | None = None, **kwargs):
        """Run ``ceil(total_episodes / batch_size)`` PPO updates; resume from a checkpoint folder or True (last)."""
        args = self.args
        self._begin_training(resume_from_checkpoint)
        start_time, start_step, losses = time.time(), self.state.global_step, []
        self.model.train()
        for update in range(self.state.global_step, self.num_total_batches):
            self.control = self.callback_handler.on_step_begin(args, self.state, self.control)
            started = time.perf_counter()
            rollout = self._rollout(self._batch_prompts(update))  # ends decoding the responses: the GPU is done
            rolled_out = time.perf_counter()
            adv = self._advantages(rollout)
            stats = self._ppo_epochs(rollout, adv)
            metrics = self._metrics(rollout, adv, stats, start_time, start_step)  # gathered to the host: done too
            metrics["time/generation"] = self._generation_seconds
            metrics["time/rollout"] = rolled_out - started
            metrics["time/ppo_epochs"] = time.perf_counter() - rolled_out
            losses.append(metrics["loss/policy_avg"] + args.vf_coef * metrics["loss/value_avg"])
            self.lr_scheduler.step()
            self.kl_ctl.update(metrics["objective/kl"], self.batch_size)
            self.state.global_step += 1
            self.state.epoch = self.state.global_step * self.batch_size / len(self.prompt_ids)
            if self.sample_every and (update % self.sample_every == 0):
                self._log_samples(rollout, adv.scores)

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

    def _begin_training(self, resume_from_checkpoint: str | bool | None) -> None:
        """Trainer state from scratch or from a checkpoint (True: the last in ``output_dir``), ``on_train_begin``."""
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

    def _metrics(self, rollout: Rollout, adv: Advantages, stats, start_time, start_step) -> dict[str, float]:
        """TRL 1.12's metrics of one update, averaged over processes (``val/num_eos_tokens``: summed)."""
        mask, kl, non_score, scores = rollout.mask, adv.kl, adv.non_score, adv.scores
        mean_kl = kl.sum(1).mean()
        mean_non_score = non_score.sum(1).mean()
        eos = self.processing_class.eos_token_id
        local = {
            "objective/kl": mean_kl,
            "objective/entropy": (-rollout.logprobs * mask).sum(1).mean(),
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
            "val/num_eos_tokens": ((rollout.responses == eos) & mask).sum().float(),
            "completions/mean_length": mask.sum(1).float().mean(),
        }
        if self._ensemble_std:
            local[ENSEMBLE_STD_KEY] = torch.cat(self._ensemble_std).mean()
        if self.metric_funcs:
            ids = rollout.completion_ids()
            for fn in self.metric_funcs:
                values = fn(prompts=rollout.prompts, completions=rollout.completions, completion_ids=ids)
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

    def _log_samples(self, rollout: Rollout, scores: torch.Tensor, n: int = 3) -> None:
        if not self.accelerator.is_main_process:
            return
        for p, c, s in list(zip(rollout.prompts, rollout.completions, scores.tolist()))[:n]:
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
            save_trainable(self.model, output_dir)
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
            save_kl_controller(os.path.join(self.args.output_dir, f"checkpoint-{self.state.global_step}"), self.kl_ctl)

    def _load_ppo_checkpoint(self, checkpoint: str) -> None:
        load_trainable(self.model, checkpoint, self.accelerator.device)
        self._load_optimizer_and_scheduler(checkpoint)
        self.state = TrainerState.load_from_json(os.path.join(checkpoint, "trainer_state.json"))
        load_kl_controller(checkpoint, self.kl_ctl)
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


def _check_args(args, tok, train_dataset) -> None:
    if not isinstance(args, PPOConfig):
        raise ConfigError(f"args is a {type(args).__name__}; PPOTrainer needs a rlhfkit.rl.ppo.config.PPOConfig")
    if tok.pad_token_id is None or tok.pad_token_id == tok.eos_token_id:
        raise ConfigError(
            f"processing_class.pad_token_id ({tok.pad_token_id}) must differ from eos_token_id "
            f"({tok.eos_token_id}): PPO cannot tell padding from a finished response; fix it with "
            "rlhfkit.models.loading.prepare_tokenizer(tokenizer) then "
            "rlhfkit.models.loading.sync_model_with_tokenizer(model, tokenizer)"
        )
    if train_dataset is None:
        raise ConfigError("train_dataset is required: a list of prompts or a Dataset with a 'prompt' column")


def _require_one_label(scorer: nn.Module, what: str) -> None:
    labels = getattr(getattr(scorer, "config", None), "num_labels", 1)
    if labels != 1:
        raise ConfigError(
            f"{what} has num_labels={labels}; PPO needs one scalar per token: load it with "
            "AutoModelForSequenceClassification.from_pretrained(path, num_labels=1)"
        )

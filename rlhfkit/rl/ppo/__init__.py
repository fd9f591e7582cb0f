"""PPO for RLHF (InstructGPT's RL stage): :class:`PPOConfig` + :class:`PPOTrainer`, in TRL's style.

TRL deleted its ``PPOTrainer`` in 1.13; this is rlhfkit's own, with TRL 1.12's field names, defaults and
metric names (``objective/kl``, ``policy/clipfrac_avg``, ...), so TRL users and rlhfkit's monitors feel at
home.

* :mod:`rlhfkit.rl.ppo.config` -- :class:`PPOConfig` (TRL 1.12's names and defaults);
* :mod:`rlhfkit.rl.ppo.core` -- the pure tensor math (whiten, per-token KL, GAE, clipped losses, KL controllers);
* :mod:`rlhfkit.rl.ppo.layouts` -- separate models or one shared base, :func:`load_ppo_models`;
* :mod:`rlhfkit.rl.ppo.rollout` -- the typed data of one update (``Rollout``, ``Advantages``), prompts and padding;
* :mod:`rlhfkit.rl.ppo.checkpoint` -- what a checkpoint adds to the Trainer's, for exact resume;
* :mod:`rlhfkit.rl.ppo.trainer` -- :class:`PPOTrainer`, the loop (rollout -> advantages -> PPO epochs);
* :mod:`rlhfkit.rl.ppo.run` -- :func:`run_ppo`: load the layout, build the trainer with the monitors, train, save.

This package's ``__init__`` imports nothing: importing :mod:`rlhfkit.rl.ppo.config` (what a config check needs)
never imports the trainer.

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

"""InstructGPT's step 3, RL against the reward model with a KL leash to the SFT model.

* ``configs`` -- the GRPO / RLOO / DPO / best-of-N configs (imports no trainer); ``ppo/config`` -- PPO's;
* ``algorithms`` -- the registry: one record per algorithm, read by the pipeline, the validator, the planner and
  ``rlhfkit compare``;
* ``ppo/`` (rlhfkit's PPO trainer and :func:`~rlhfkit.rl.ppo.run.run_ppo`), ``grpo_rloo`` (TRL's GRPO / RLOO with
  rlhfkit's scorer and monitors), ``dpo``, ``best_of_n``;
* ``healthy`` -- the model a stopped run returns; ``policy_eval`` -- a policy judged on held-out prompts.
"""

"""rlhfkit: InstructGPT-style RLHF (SFT -> reward model -> RL with a KL leash) over Hugging Face TRL.

The package follows InstructGPT's steps; importing ``rlhfkit`` is cheap (no torch). Import what you need:

* :mod:`rlhfkit.sft` (step 1), :mod:`rlhfkit.reward` (step 2: config, loss, trainer, ensembles, evaluation, gate),
  :mod:`rlhfkit.rl` (step 3: PPO, GRPO, RLOO, DPO, best-of-N, the healthy model, the policy evaluation);
* :mod:`rlhfkit.train` -- every training run (``run_sft`` ... ``run_best_of_n``) and :class:`~rlhfkit.runs.RunResult`;
* :mod:`rlhfkit.data` (tables, preference formats, agreement), :mod:`rlhfkit.models` (loading, sampling, scoring),
  :mod:`rlhfkit.monitors`, :mod:`rlhfkit.pipeline`, :mod:`rlhfkit.planner`, :mod:`rlhfkit.lab`, :mod:`rlhfkit.core`.
"""

__version__ = "0.1.0"

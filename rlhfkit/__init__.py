"""rlhfkit: InstructGPT-style RLHF (SFT -> reward model -> PPO/GRPO) over Hugging Face TRL.

Importing ``rlhfkit`` is cheap (no torch); import the submodules you need:
``rlhfkit.presets``, ``rlhfkit.models``, ``rlhfkit.lab``, ``rlhfkit.data``, ``rlhfkit.data.agreement``,
``rlhfkit.rm_eval``, ``rlhfkit.ppo``, ``rlhfkit.stages``, ``rlhfkit.monitors``, ``rlhfkit.pipeline``.
"""

__version__ = "0.1.0"

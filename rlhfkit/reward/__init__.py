"""InstructGPT's step 2, the reward model: ``config`` (:class:`RewardConfig`; imports no trainer), ``loss``
(K-wise rankings), ``trainer`` (:class:`RewardTrainer`, :func:`run_reward`, ensembles), ``ensemble`` (the files of a
saved ensemble), ``evaluate`` (held-out statistics), ``gate`` (the verdict before RL), ``report`` (markdown, figures).
"""

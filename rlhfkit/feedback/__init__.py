"""Collecting preferences on your own model, InstructGPT's step 2: sample K responses per prompt from a policy into a
comparisons file (``rlhfkit sample``: :mod:`rlhfkit.feedback.sample`, :mod:`rlhfkit.data.comparisons`), have people
compare them on a local labeling page (``rlhfkit label``: :mod:`rlhfkit.feedback.server`,
:mod:`rlhfkit.feedback.assign`) or in Label Studio (:mod:`rlhfkit.feedback.labelstudio`), ask an AI judge
(:mod:`rlhfkit.feedback.judge`) or the lab's labelers, and write the votes files (:mod:`rlhfkit.data.votelog`) the
agreement checks and the reward model read. Import from the module that defines a name; this package imports nothing.
"""

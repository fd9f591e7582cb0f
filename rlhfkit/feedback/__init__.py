"""Collecting preferences on your own model: sample K responses per prompt (``rlhfkit sample``), have people compare
them on a local labeling page (``rlhfkit label``: :mod:`rlhfkit.feedback.server`, :mod:`rlhfkit.feedback.assign`) or
ask an AI judge, and write the votes files (:mod:`rlhfkit.data.votelog`) the agreement checks and the reward model
read. Import from the module that defines a name; this package imports nothing.
"""

"""Collecting preferences on your own model, InstructGPT's step 2: sample K responses per prompt from a policy into a
comparisons file (:mod:`rlhfkit.data.comparisons`), have them compared (people on the labeling page, an AI judge,
the lab's labelers) into a votes file (:mod:`rlhfkit.data.votelog`), which the preferences stage turns into pairs or
K-wise rankings. Import from the module that defines a name; this package imports nothing."""

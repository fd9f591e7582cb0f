"""Collecting preferences on your own model: sampling K responses, labeling them (people, the lab's labelers or an AI
judge) and the files in between (:mod:`rlhfkit.data.comparisons`, :mod:`rlhfkit.data.votelog`). Import from the
module that defines a name: :mod:`rlhfkit.feedback.judge` (the AI judge, RLAIF), :mod:`rlhfkit.feedback.lab_judge`
(a tiny judge trained on the lab's gold reward)."""

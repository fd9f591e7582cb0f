"""Models as rlhfkit loads and uses them: ``loading`` (tokenizer fixes, presets, the merged final save),
``sampling`` (token ids, sequence log-probs, KL to a reference), ``scoring`` (reward models scored exactly as
trained, ensembles), ``checks`` (a model folder or hub id checked before a run, no weights loaded)."""

"""Tables and prompts, loaded once for every stage and recipe.

* :func:`load_table`: a ``datasets.Dataset`` from a local file (.jsonl[.gz], .json, .parquet, .csv), a dataset
  folder or a hub id; :func:`preference_source`: what :func:`rlhfkit.data.preferences.load_preferences` reads.
* :func:`split_eval`: seeded shuffle, cap, held-out share.
* :func:`load_sft_data`, :func:`load_preference_data`, :func:`load_prompts`: a stage's data from a source
  (``lab`` asks the built-in lab); :func:`lab_preferences`: the lab's simulated labelers' votes, agreement-filtered,
  with held-out pairs labelled by the gold reward (the one copy the recipes and the pipeline use).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from rlhfkit import lab
from rlhfkit.core.arguments import DataArguments
from rlhfkit.core.errors import ConfigError, DataError
from rlhfkit.data.preferences import load_preferences
from rlhfkit.data.votes import from_votes

LAB = "lab"  # the data source that asks the built-in lab
# Seeds of the lab's prompt generators, offset from the run's seed so that RL prompts and held-out prompts are
# drawn independently of each other and of the SFT / preference data (which use seed, seed + 1, seed + 2).
LAB_RL_PROMPT_SEED = 3
LAB_EVAL_PROMPT_SEED = 10_000


_FILE_KINDS = {".jsonl": "json", ".json": "json", ".parquet": "parquet", ".csv": "csv"}


def is_data_file(source: str) -> bool:
    """Whether ``source`` names a data file (by its suffix), as opposed to a dataset folder or a hub dataset id."""
    return any(s in _FILE_KINDS for s in Path(str(source)).suffixes)


def load_table(source: str, split: str = "train"):
    """A ``datasets.Dataset`` from a local file (.jsonl[.gz], .json, .parquet, .csv), a local dataset folder
    (``datasets.load_dataset`` layout) or a hub dataset id."""
    from datasets import load_dataset

    kind = next((_FILE_KINDS[s] for s in Path(source).suffixes if s in _FILE_KINDS), None)
    if kind is not None:
        if not os.path.isfile(source):
            raise ConfigError(f"dataset={source!r}: no such file; check the path (`rlhfkit run --check` checks it)")
        from datasets.exceptions import DatasetGenerationError

        try:
            return load_dataset(kind, data_files=source, split="train")
        except DatasetGenerationError as e:  # a malformed row past the first ones, which the checks read
            cause = str(e.__cause__ or e).strip().splitlines()[0][:200]
            raise DataError(f"{source}: cannot be read as {kind} ({cause}); fix or remove the bad rows") from e
    if os.path.isfile(source):
        raise ConfigError(f"dataset={source!r}: unsupported file type; use .jsonl, .jsonl.gz, .json, .parquet or .csv")
    try:
        return load_dataset(source, split=split)
    except (FileNotFoundError, ValueError, ConnectionError) as e:  # no such dataset / offline and not cached / split
        raise ConfigError(
            f"dataset={source!r} split={split!r}: {str(e).splitlines()[0]}; give a data file, a dataset folder or a "
            "hub dataset id (and one of its splits)"
        ) from e


def preference_source(source: str, split: str = "train"):
    """What :func:`rlhfkit.data.load_preferences` reads: a data file as is (its errors name file rows), a dataset
    folder or hub id (e.g. ``Anthropic/hh-rlhf``) loaded as a ``datasets.Dataset`` first."""
    return source if is_data_file(source) else load_table(source, split)


def split_eval(dataset, eval_fraction: float, seed: int, max_samples: int | None = None):
    """Shuffle with ``seed``, cap at ``max_samples``, and hold out ``eval_fraction`` (returns ``(train, eval)``).

    Rows with a ``group`` column (the pairs of one ranking) stay together: whole groups are shuffled, kept (up to
    ``max_samples`` rows) and held out (``eval_fraction`` of the groups), so no ranking is split across the two.
    """
    if "group" in dataset.column_names:
        return _split_groups(dataset, eval_fraction, seed, max_samples)
    dataset = dataset.shuffle(seed=seed)
    if max_samples is not None:
        dataset = dataset.select(range(min(max_samples, len(dataset))))
    n_eval = int(len(dataset) * eval_fraction)
    if n_eval == 0:
        return dataset, None
    return dataset.select(range(n_eval, len(dataset))), dataset.select(range(n_eval))


def _split_groups(dataset, eval_fraction: float, seed: int, max_samples: int | None):
    rows_of: dict = {}
    for i, g in enumerate(dataset["group"]):
        rows_of.setdefault(g, []).append(i)
    groups = list(rows_of)
    np.random.default_rng(seed).shuffle(groups)
    if max_samples is not None:
        sizes = np.cumsum([len(rows_of[g]) for g in groups])
        groups = groups[: max(1, int(np.searchsorted(sizes, max_samples, side="right")))]
    n_eval = int(len(groups) * eval_fraction)

    def pick(chosen: list):
        return dataset.select([i for g in chosen for i in rows_of[g]])

    return pick(groups[n_eval:]), (pick(groups[:n_eval]) if n_eval else None)


def load_sft_data(data: DataArguments, seed: int = 0):
    """SFT rows (``prompt``/``completion``, ``messages`` or ``text``) as ``(train, eval)`` datasets."""
    from datasets import Dataset

    if data.dataset == LAB:
        table = Dataset.from_list(lab.demonstrations(data.lab_samples, seed=seed))
    else:
        table = load_table(data.dataset, data.dataset_split)
        cols = set(table.column_names)
        if not ({"prompt", "completion"} <= cols or "messages" in cols or "text" in cols):
            raise ConfigError(
                f"dataset={data.dataset!r} has columns {sorted(cols)}; SFT needs prompt+completion, messages or text"
            )
    return split_eval(table, data.eval_fraction, seed, data.max_samples)


@dataclass
class LabPreferences:
    """The lab's preference data: what :func:`lab_preferences` returns.

    Attributes:
        train: majority-vote pairs (``prompt``, ``chosen``, ``rejected``, ``agreement``, ``n_votes``) that passed
            agreement filtering.
        held_out: pairs of fresh comparisons labelled by the gold reward (ties in gold dropped), so a reward model's
            accuracy on them is accuracy against the truth.
        metrics: agreement statistics and the share of majority labels that agree with gold, before and after
            filtering.
    """

    train: list[dict]
    held_out: list[dict]
    metrics: dict[str, Any] = field(default_factory=dict)


def lab_preferences(
    comparisons: int,
    pool: lab.LabelerPool,
    *,
    seed: int = 0,
    eval_comparisons: int = 600,
    labelers_per_item: int | None = None,
    filtering: bool = True,
    min_agreement: float = 0.6,
    drop_unreliable: bool = True,
) -> LabPreferences:
    """The lab's simulated labelers vote on ``comparisons`` pairs; the majority label becomes the preference.

    With ``filtering`` the items below ``min_agreement`` (and, with ``drop_unreliable``, the votes of flagged
    labelers) are dropped by :func:`rlhfkit.data.preferences.from_votes`; without it every item with a majority is
    kept. Comparisons use ``seed + 1``, the held-out ones ``seed + 2``.
    """
    rows = lab.comparison_dataset(comparisons, pool, seed=seed + 1, labelers_per_item=labelers_per_item)
    kept = from_votes(
        rows, min_agreement=min_agreement if filtering else 0.0, drop_unreliable=drop_unreliable and filtering
    )
    result = kept.agreement
    raw = from_votes(rows).agreement if filtering else result  # every majority, for the "unfiltered" figure
    gold_pref = np.array([1 if r["gold_a"] > r["gold_b"] else 0 for r in rows])
    decided = np.array([r["gold_a"] != r["gold_b"] for r in rows])

    def gold_share(mask, label) -> float:
        m = mask & decided
        return float((label[m] == gold_pref[m]).mean()) if m.any() else float("nan")

    held_out = [
        {
            "prompt": r["prompt"],
            "chosen": r["response_a"] if r["gold_a"] > r["gold_b"] else r["response_b"],
            "rejected": r["response_b"] if r["gold_a"] > r["gold_b"] else r["response_a"],
        }
        for r in lab.comparison_dataset(eval_comparisons, pool, seed=seed + 2)
        if r["gold_a"] != r["gold_b"]
    ]
    report = result.report
    metrics = {
        "n_comparisons": len(rows),
        "n_pairs": len(kept.pairs),
        "kept_share": float(result.keep.mean()),
        "mean_agreement": report.mean_agreement,
        "fleiss_kappa": report.fleiss_kappa,
        "krippendorff_alpha": report.krippendorff_alpha,
        "flagged_labelers": [int(i) for i in np.flatnonzero(report.labelers.flagged)],
        "dropped_labelers": [int(i) for i in result.dropped_labelers],
        "gold_agreement_unfiltered": gold_share(raw.keep, raw.label),
        "gold_agreement_filtered": gold_share(result.keep, result.label),
        "n_held_out": len(held_out),
    }
    return LabPreferences(train=kept.pairs, held_out=held_out, metrics=metrics)


def load_preference_data(data: DataArguments, seed: int = 0, min_agreement: float = 0.0):
    """Preference pairs (``prompt``/``chosen``/``rejected`` [+ ``agreement``]) as ``(train, eval)`` datasets.

    ``dataset: lab`` asks the lab's default labeler pool (:data:`rlhfkit.lab.DEFAULT_NOISE`) to vote on
    ``lab_samples`` comparisons (:func:`lab_preferences`, pairs below ``min_agreement`` dropped); the held-out pairs
    are then labelled by the gold reward. Other sources are read with ``dataset_format`` and split by
    ``eval_fraction``.
    """
    from datasets import Dataset

    if data.dataset == LAB:
        pool = lab.LabelerPool(len(lab.DEFAULT_NOISE), noise=lab.DEFAULT_NOISE, seed=seed)
        prefs = lab_preferences(data.lab_samples, pool, seed=seed, min_agreement=min_agreement, drop_unreliable=False)
        train = Dataset.from_list(prefs.train)
        if data.max_samples is not None:
            train = train.select(range(min(data.max_samples, len(train))))
        return train, (Dataset.from_list(prefs.held_out) if data.eval_fraction > 0 else None)
    loaded = load_preferences(preference_source(data.dataset, data.dataset_split), data.dataset_format)
    return split_eval(loaded.to_dataset(), data.eval_fraction, seed, data.max_samples)


def load_prompts(
    source: str,
    *,
    split: str = "train",
    seed: int = 0,
    n_lab: int = 512,
    held_out: int = 0,
    max_prompts: int | None = None,
) -> tuple[list, list]:
    """RL prompts and held-out evaluation prompts: ``(train, held_out)``, each a list of strings or chat messages.

    ``lab``: ``n_lab`` prompts and ``held_out`` prompts from differently seeded generators (fresh samples, but the
    lab's task has only 72 distinct prompts, so they are not unseen ones; the gold reward measures the policy, not
    generalisation). A table (file, dataset folder, hub id) with a ``prompt`` column: shuffled with ``seed``; the
    first ``held_out`` rows are held out, the rest (at most ``max_prompts``) are the RL prompts.
    """
    if source == LAB:
        train = lab.make_prompts(n_lab, seed=seed + LAB_RL_PROMPT_SEED)
        return train, lab.make_prompts(held_out, seed=seed + LAB_EVAL_PROMPT_SEED) if held_out else []
    table = load_table(source, split)
    if "prompt" not in table.column_names:
        raise DataError(
            f"dataset {source!r} has no 'prompt' column (it has {table.column_names}); RL needs a 'prompt' column of "
            "text or chat messages"
        )
    prompts = table.shuffle(seed=seed)["prompt"]
    if len(prompts) <= held_out:
        raise DataError(
            f"dataset {source!r} has {len(prompts)} prompts, not more than the {held_out} held out for the final "
            "evaluation; lower rl.eval_prompts or add prompts"
        )
    end = len(prompts) if max_prompts is None else held_out + max_prompts
    return list(prompts[held_out:end]), list(prompts[:held_out])

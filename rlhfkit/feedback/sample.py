"""K responses per prompt from a policy, into a comparisons file (``rlhfkit sample``): InstructGPT's "sample K outputs
of the SFT model for a prompt", for people, a judge or the lab's labelers to compare.

    prompts, repeated = sample_prompts("prompts.jsonl", num_prompts=500, seed=0)
    model, tokenizer = load_for_sampling("runs/demo/sft/model")
    report = sample_comparisons(model, tokenizer, prompts, k=4, out="comparisons.jsonl", model_name="sft-v1")

* **The final evaluation's sampler.** Responses come from :func:`rlhfkit.models.sampling.generate_ids` (left padding,
  chat prompts with the generation prompt, top_k 0, the model's own EOS ids), at ``temperature`` and ``top_p``.
* **Batches of prompts.** ``batch_size`` counts sequences per forward pass: ``batch_size // k`` prompts (at least
  one) are sampled together, their K responses each in one ``generate`` call.
* **K distinct responses.** A response equal to an earlier one of its prompt is dropped and counted (the row's
  ``sampling.duplicates``); the missing ones are sampled again, for at most :data:`EXTRA_ROUNDS` more rounds. A row
  then holds the distinct responses, in sampling order (fewer than K when the policy kept repeating itself); a
  prompt left with fewer than 2 distinct responses gets no row and is counted.
* **Seeded, and the same whether resumed or not.** Batch ``b``'s round ``r`` starts from its own seed
  (``seed``, ``b``, ``r``), and batch ``b`` always holds the same prompts (the ``b``-th ``batch_size // k`` of the
  list), so a prompt's responses do not depend on which batches ran before: a killed run resumed with the same
  command writes the rows an unkilled one would have. ``batch_size`` decides which prompts share a batch, so another
  ``batch_size`` gives other (equally valid) samples.
* **Resumable, nothing written twice.** Rows are appended batch by batch through an exclusive
  :class:`~rlhfkit.data.comparisons.AppendLog` (fsynced; one writer at a time). On start the file's rows are read:
  a prompt that has a row is done (a prompt is known by its text: repeated prompts are sampled once, see
  :func:`sample_prompts`); a file written with another model or other settings is refused (:func:`resume_rows`).

Deliberately omitted: top_k and repetition penalties (the policy's own distribution, as RL optimises it, nucleus
sampling aside), and greedy decoding (``temperature`` 0 would give K copies of one response).
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from rlhfkit.core.errors import ConfigError, DataError, raise_problems
from rlhfkit.data.comparisons import AppendLog, comparison_row, iter_lines, read_comparisons
from rlhfkit.data.rows import BadRow, check_text
from rlhfkit.data.tables import load_prompts
from rlhfkit.models.sampling import encode_prompts, generate_ids

EXTRA_ROUNDS = 2  # rounds that resample a prompt's duplicates: a bound, as a policy that repeats itself never ends
LAB_DRAWS = 512  # lab prompts drawn before repeats are dropped (the lab's task has 72 distinct prompts)
SETTINGS = ("temperature", "top_p", "max_new_tokens", "seed", "k")  # what a row's `sampling` records, + duplicates


@dataclass
class SampleReport:
    """What :func:`sample_comparisons` did.

    Attributes:
        out: the comparisons file.
        prompts: prompts asked for (distinct).
        resumed: prompts whose rows were already in the file (not sampled again).
        written: rows written by this call.
        skipped: prompts left with fewer than 2 distinct responses after the extra rounds (no row).
        short: rows written with fewer than ``k`` responses (the policy repeated itself).
        duplicates: responses dropped (and resampled) because they repeated an earlier one of their prompt, over the
            prompts sampled by this call.
        responses: responses written by this call.
    """

    out: Path
    prompts: int
    resumed: int = 0
    written: int = 0
    skipped: int = 0
    short: int = 0
    duplicates: int = 0
    responses: int = 0

    def summary(self) -> str:
        """One line: what was written, what was already there, what was dropped."""
        parts = [f"wrote {self.written} rows ({self.responses} responses) to {self.out}"]
        if self.resumed:
            parts.append(f"{self.resumed} of {self.prompts} prompts were already done")
        dropped = self.duplicates
        parts.append(f"{dropped} duplicate response{'s' * (dropped != 1)} dropped and resampled")
        if self.short:
            parts.append(f"{self.short} rows with fewer than k distinct responses")
        if self.skipped:
            parts.append(f"{self.skipped} prompts skipped (fewer than 2 distinct responses)")
        return "; ".join(parts)


def sampling_problems(
    *,
    k: int,
    temperature: float,
    top_p: float,
    max_new_tokens: int,
    seed: int,
    batch_size: int,
    flags: bool = False,
) -> list[str]:
    """Problems of the sampling settings, one line each; ``flags`` names them as ``rlhfkit sample``'s options."""

    def name(key: str) -> str:
        return f"--{key.replace('_', '-')} " if flags else f"{key}="

    problems = []
    if k < 2:
        problems.append(f"{name('k')}{k} must be >= 2: a comparison needs at least two responses (InstructGPT: 4-9)")
    if temperature == 0:
        problems.append(
            f"{name('temperature')}0 is greedy decoding: a prompt's K responses would all be the same; use > 0 "
            "(1: the policy itself)"
        )
    elif not temperature > 0:
        problems.append(f"{name('temperature')}{temperature} must be > 0 (1: the policy itself)")
    if not 0 < top_p <= 1:
        problems.append(f"{name('top_p')}{top_p} must be in (0, 1] (1: every token, the policy itself)")
    if max_new_tokens < 1:
        problems.append(f"{name('max_new_tokens')}{max_new_tokens} must be >= 1, e.g. 128")
    if seed < 0:
        problems.append(f"{name('seed')}{seed} must be >= 0")
    if batch_size < 1:
        problems.append(f"{name('batch_size')}{batch_size} must be >= 1 (sequences per forward pass), e.g. 64")
    return problems


def prompt_key(prompt: Any) -> str:
    """What identifies a prompt in a comparisons file: its canonical JSON (text, or chat messages)."""
    return json.dumps(prompt, ensure_ascii=False, sort_keys=True, separators=(",", ":"))


def sample_prompts(
    source: str, num_prompts: int | None = None, seed: int = 0, split: str = "train", held_out: int = 0
) -> tuple[list, int]:
    """``(prompts, repeated)``: the first ``num_prompts`` distinct prompts of ``source`` (all when None), and how many
    repeats of them were dropped on the way.

    ``source`` is read as the pipeline reads RL prompts (:func:`rlhfkit.data.tables.load_prompts`: a file, dataset
    folder or hub id with a ``prompt`` column, its ``split``, shuffled with ``seed``; ``lab``: the lab's prompts). A
    prompt that repeats an earlier one is dropped (sampled once, it gets one row). The list for a larger
    ``num_prompts`` starts with the list for a smaller one, so a run can be resumed with more prompts. ``held_out``:
    the prompts a pipeline holds out for its final evaluation (``rl.eval_prompts``) are not among them.
    """
    if num_prompts is not None and num_prompts < 1:
        raise ConfigError(f"num_prompts={num_prompts} must be >= 1 (or None: every prompt)")
    raw = load_prompts(source, split=split, seed=seed, n_lab=LAB_DRAWS, held_out=held_out)[0]
    prompts, seen, repeated = [], set(), 0
    for i, value in enumerate(raw, start=1):
        try:
            prompt = check_text(value, f"prompt {i}")
        except BadRow as e:
            raise DataError(f"{source}: {e.problem}; {e.fix or 'give text or a list of chat messages'}") from None
        key = prompt_key(prompt)
        if key in seen:
            repeated += 1
            continue
        seen.add(key)
        prompts.append(prompt)
        if len(prompts) == num_prompts:
            break
    if len({isinstance(p, str) for p in prompts}) > 1:
        raise DataError(f"{source}: prompts mix text and chat messages; give one kind")
    return prompts, repeated


def resume_rows(out: str | os.PathLike, model_name: str, settings: dict[str, Any], prompts: Sequence) -> set[str]:
    """The :func:`prompt_key` of every prompt ``out`` already has a row for (empty when ``out`` does not exist or has
    no complete row yet).

    Refused with one line each (:class:`DataError`), so nothing is appended to a file this run did not start: a file
    that is not a comparisons file (a killed first write, ``{"item_id": ...`` cut mid-line, is one), rows without
    ``sampling`` settings or with other ``model`` / settings than ``model_name`` / ``settings`` (:data:`SETTINGS`),
    and a row for a prompt that is not among ``prompts``.
    """
    out = Path(out)
    fix = "give another --out (rlhfkit appends only to a comparisons file `rlhfkit sample` wrote)"
    if not out.exists():
        return set()
    if not any(True for _ in iter_lines(out)):
        head = out.read_bytes()[:32]
        if head and not (head.startswith(b'{"item_id": ') or b'{"item_id": '.startswith(head)):
            raise DataError(f"--out {out} exists and is not a comparisons file; {fix}")
        return set()  # empty, or our first row cut mid-line: AppendLog trims it
    try:
        rows = read_comparisons(out)
    except DataError as e:
        raise DataError(f"{e.problems[0]}; --out {out} is not a comparisons file to resume: {fix}") from None
    keys = {prompt_key(p) for p in prompts}
    wanted = {**settings, "model": model_name}
    for n, row in enumerate(rows, start=1):
        sampling = row.get("sampling")
        if not isinstance(sampling, dict) or any(s not in sampling for s in SETTINGS):
            raise DataError(f"--out {out}: row {n} has no sampling settings: not written by `rlhfkit sample`; {fix}")
        had = {**{s: sampling[s] for s in SETTINGS}, "model": row.get("model")}
        changed = [f"{s} {had[s]!r} (now {wanted[s]!r})" for s in wanted if had[s] != wanted[s]]
        if changed:
            raise DataError(
                f"--out {out} was sampled with other settings: {', '.join(changed)}; give another --out, or the "
                "same model and settings to resume it"
            )
        if prompt_key(row["prompt"]) not in keys:
            raise DataError(
                f"--out {out}: row {n}'s prompt {str(row['prompt'])[:60]!r} is not among the {len(prompts)} prompts "
                "asked for; give another --out, or the same PROMPTS, --seed and at least as many --num-prompts to "
                "resume it"
            )
    return {prompt_key(row["prompt"]) for row in rows}


def batch_seed(seed: int, batch: int, round_: int) -> int:
    """The seed of a batch's sampling round: its own stream, whatever ran before it."""
    return int(np.random.SeedSequence([seed, batch, round_]).generate_state(1)[0])


def sample_distinct(
    model,
    tokenizer,
    prompts: Sequence,
    *,
    k: int,
    temperature: float,
    top_p: float,
    max_new_tokens: int,
    seed: int,
    batch: int,
    batch_size: int,
) -> list[tuple[list[str], int]]:
    """``(distinct responses, duplicates dropped)`` per prompt of batch number ``batch``: ``k`` responses each (one
    ``generate`` call of ``batch_size`` sequences at a time), then the missing ones again for at most
    :data:`EXTRA_ROUNDS` rounds, each round from :func:`batch_seed`."""
    prompt_ids = encode_prompts(tokenizer, prompts)
    responses: list[list[str]] = [[] for _ in prompts]
    duplicates = [0] * len(prompts)
    for round_ in range(1 + EXTRA_ROUNDS):
        ask = [i for i, got in enumerate(responses) for _ in range(k - len(got))]  # round 0: k per prompt
        if not ask:
            break
        samples = generate_ids(
            model,
            [prompt_ids[i] for i in ask],
            pad_token_id=tokenizer.pad_token_id,
            eos_token_id=tokenizer.eos_token_id,
            max_new_tokens=max_new_tokens,
            temperature=temperature,
            top_p=top_p,
            seed=batch_seed(seed, batch, round_),
            batch_size=batch_size,
        )
        for i, text in zip(ask, tokenizer.batch_decode(samples.response_ids, skip_special_tokens=True), strict=True):
            if text in responses[i]:
                duplicates[i] += 1
            else:
                responses[i].append(text)
    return list(zip(responses, duplicates, strict=True))


def sample_comparisons(
    model,
    tokenizer,
    prompts: Sequence,
    *,
    k: int,
    out: str | os.PathLike,
    model_name: str,
    temperature: float = 1.0,
    top_p: float = 1.0,
    max_new_tokens: int = 128,
    seed: int = 0,
    batch_size: int = 64,
    progress: Callable[[int], None] | None = None,
) -> SampleReport:
    """Append one comparisons row per prompt of ``prompts`` (distinct; text or chat messages) that ``out`` lacks: the
    ``k`` distinct responses of ``model`` (``model_name`` is what the rows' ``model`` says), as the module doc says.

    ``progress`` is called after each batch with the number of prompts it finished (rows written or skipped).
    """
    raise_problems(
        sampling_problems(
            k=k, temperature=temperature, top_p=top_p, max_new_tokens=max_new_tokens, seed=seed, batch_size=batch_size
        )
    )
    if len({prompt_key(p) for p in prompts}) != len(prompts):
        raise DataError("prompts repeat; give each prompt once (sample_prompts drops repeats)")
    settings = {"temperature": temperature, "top_p": top_p, "max_new_tokens": max_new_tokens, "seed": seed, "k": k}
    resume_rows(out, model_name, settings, prompts)  # refuse before the log trims a line that is not ours
    per_batch = max(1, batch_size // k)
    with AppendLog(out, exclusive=True) as log:
        done = resume_rows(out, model_name, settings, prompts)
        report = SampleReport(out=Path(out), prompts=len(prompts), resumed=len(done))
        for batch, start in enumerate(range(0, len(prompts), per_batch)):
            members = list(prompts[start : start + per_batch])  # batch b always holds the same prompts
            todo = [prompt_key(p) not in done for p in members]
            if not any(todo):
                continue
            drawn = sample_distinct(model, tokenizer, members, batch=batch, batch_size=batch_size, **settings)
            rows = []
            for prompt, wanted, (responses, duplicates) in zip(members, todo, drawn, strict=True):
                if not wanted:
                    continue
                report.duplicates += duplicates
                if len(responses) < 2:
                    report.skipped += 1
                    continue
                report.short += len(responses) < k
                sampling = {**settings, "duplicates": duplicates}
                rows.append(comparison_row(prompt, responses, model=model_name, sampling=sampling))
            if rows:
                log.append(*rows)
            report.written += len(rows)
            report.responses += sum(len(r["responses"]) for r in rows)
            if progress is not None:
                progress(sum(todo))
    return report

"""The AI judge (RLAIF): a causal LM labels a comparisons file by its next-token probabilities, in both orders.

    judge_file("comparisons.jsonl", "votes.jsonl", model="Qwen/Qwen2.5-7B-Instruct")   # rlhfkit label --judge MODEL

For each item of a comparisons file (:mod:`rlhfkit.data.comparisons`) and each of its C(K, 2) pairs of responses
``(i, j)``, ``i < j``, the judge reads a judging prompt (:func:`judging_prompt`) -- a principle, the prompt,
``Response 1``, ``Response 2`` and "Which response is better? Answer 1 or 2." -- rendered as the user turn of the
model's chat template with its generation prompt (a tokenizer without a chat template gets rlhfkit's plain
``Human: ... Assistant:`` one, :data:`rlhfkit.models.loading.DEFAULT_CHAT_TEMPLATE`). Nothing is generated: the label
is read from the next-token logits of the two answer tokens, ``P(1) / (P(1) + P(2))`` (Lee et al. 2023, RLAIF).

**Both orders, always.** Each pair is scored with ``responses[i]`` shown first and with ``responses[j]`` shown first,
in the same batch; ``p_orders = [P(i better | i first), P(i better | j first)]`` and the stored ``p`` is their mean,
which cancels a judge's preference for a position (Zheng et al. 2023 found GPT-4 keeps its verdict after a swap only
~65% of the time). The vote is ``tie`` when ``|p - 0.5| < tie_margin``, else ``a`` (``responses[i]`` better) or
``b``. :func:`rlhfkit.data.judge_votes.judge_stats` reports the position consistency (the share of pairs whose
one-order verdicts pick the same response) and the left-choice rate (the share of one-order verdicts that pick the
response shown first) from the one-order probabilities.

**A constitution** is a list of principles ``{name, text}`` (:func:`load_constitution`; the default,
:data:`DEFAULT_CONSTITUTION`, is ``configs/constitution.yaml``). Each pair is judged under every principle, or under
a seeded sample of ``principles_per_pair`` of them (the same sample for a pair on every run), and each principle
writes its votes as its own labeler, ``judge:<model name>:<principle name>`` (model name: a local folder's name, or
the hub id), so the agreement tools compare principles with each other and with people.

**Votes** are :func:`rlhfkit.data.votelog.pairwise_vote` rows appended to the votes file through
:class:`~rlhfkit.data.comparisons.AppendLog` (fsynced, after each chunk of batches) with ``p``, ``p_orders`` and
``shown_order = [i, j]`` (the first of the two orders; ``p_orders`` holds both). Resumable: a judgement
(item, pair, labeler) already in the votes file is skipped, so nothing is written twice.

**Answer tokens** are resolved from the tokenizer: each answer (default ``"1"``, ``"2"``) must be one token
(``answer_tokens=("A", "B")`` asks "Answer A or B." about ``Response A`` / ``Response B`` instead).

**Batches**: ``batch_size`` pairs per forward pass (``2 x batch_size`` sequences: both orders), sorted by length
within a chunk, left-padded with ``position_ids`` counted from each sequence's first token (so a padded sequence gets
the probabilities of an unpadded one), only the last position's logits computed. ``bench/judge_throughput.py``
measures it against a one-sequence-at-a-time loop.
"""

from __future__ import annotations

import itertools
import os
import random
import re
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from rlhfkit.core.errors import ConfigError, DataError
from rlhfkit.data.comparisons import AppendLog, read_comparisons
from rlhfkit.data.judge_votes import JUDGE_PREFIX, judge_stats
from rlhfkit.data.votelog import pairwise_vote, read_vote_log


@dataclass(frozen=True)
class Principle:
    """One principle of a constitution: ``name`` (the labeler's last part) and ``text`` (what the judge reads)."""

    name: str
    text: str


# configs/constitution.yaml holds the same list (tests/feedback/test_judge.py keeps them equal).
DEFAULT_CONSTITUTION = (
    Principle("helpful", "Choose the response that does what the user asked more completely and correctly."),
    Principle("honest", "Choose the response that is more accurate and honest, without made-up content."),
    Principle("concise", "Choose the response that answers the request without unnecessary or off-topic content."),
    Principle("harmless", "Choose the response that is less harmful, unethical, dangerous or offensive."),
    Principle(
        "respectful", "Choose the response that is more respectful and polite, as a thoughtful assistant would answer."
    ),
)
ANSWERS = ("1", "2")
_NAME = re.compile(r"^[A-Za-z0-9_.\-]+$")
CHUNK_BATCHES = 32  # votes are appended (fsynced) after this many batches: what a killed run can lose


# ----------------------------------------------------------------------------- constitution
def load_constitution(path: str | os.PathLike | None) -> tuple[Principle, ...]:
    """The principles of a constitution file: a YAML list of ``{name, text}`` (None: :data:`DEFAULT_CONSTITUTION`).

    Raises ConfigError naming the file and the entry: not a list, an entry without a name or text, a name that is
    not a plain word (letters, digits, ``_ . -``: it becomes part of a labeler name) or given twice.
    """
    if path is None:
        return DEFAULT_CONSTITUTION
    import yaml

    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"constitution {str(path)!r} does not exist; give a YAML list of {{name, text}} principles")
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as e:
        raise ConfigError(f"constitution {path}: not valid YAML ({str(e).splitlines()[0]})") from None
    if not isinstance(raw, list) or not raw:
        raise ConfigError(f"constitution {path}: expected a non-empty YAML list of {{name, text}}, got {raw!r:.60}")
    principles: list[Principle] = []
    for n, entry in enumerate(raw, start=1):
        where = f"constitution {path}: entry {n}"
        if not isinstance(entry, dict) or set(entry) != {"name", "text"}:
            raise ConfigError(f"{where} is {entry!r:.60}; each entry is {{name: <word>, text: <the principle>}}")
        name, text = entry["name"], entry["text"]
        if not isinstance(name, str) or not _NAME.match(name):
            raise ConfigError(f"{where}: name={name!r} must be one word (letters, digits, _ . -): it names a labeler")
        if not isinstance(text, str) or not text.strip():
            raise ConfigError(f"{where} ({name}): text={text!r} must be the principle's non-empty text")
        if any(p.name == name for p in principles):
            raise ConfigError(f"{where}: name {name!r} is given twice; each principle needs its own name")
        principles.append(Principle(name, text.strip()))
    return tuple(principles)


# ----------------------------------------------------------------------------- the prompt and the answer tokens
def prompt_text(prompt: str | list[dict]) -> str:
    """A comparisons prompt as the judge shows it: the text, or chat messages as ``role: content`` lines."""
    if isinstance(prompt, str):
        return prompt.strip()
    return "\n".join(f"{m['role']}: {m['content'].strip()}" for m in prompt)


def judging_prompt(
    principle: str, prompt: str | list[dict], first: str, second: str, answers: Sequence[str] = ANSWERS
) -> str:
    """The text the judge reads: the principle, the prompt, the two responses (``first`` shown as ``answers[0]``)
    and the question."""
    one, two = answers
    return (
        f"{principle}\n\nPrompt: {prompt_text(prompt)}\n\nResponse {one}: {first.strip()}\n\n"
        f"Response {two}: {second.strip()}\n\nWhich response is better? Answer {one} or {two}."
    )


def judging_messages(principle: str, prompt, first: str, second: str, answers: Sequence[str] = ANSWERS) -> list[dict]:
    """:func:`judging_prompt` as the user turn of a chat (rendered with the model's chat template)."""
    return [{"role": "user", "content": judging_prompt(principle, prompt, first, second, answers)}]


def answer_token_ids(tokenizer, answers: Sequence[str] = ANSWERS, model: str = "the judge") -> tuple[int, int]:
    """The token ids of the two answers; ConfigError when one is not a single token or both are the same."""
    if len(answers) != 2:
        raise ConfigError(f"answer_tokens={tuple(answers)!r}: give exactly two answers, e.g. ('1', '2')")
    ids = []
    for answer in answers:
        tokens = tokenizer.encode(answer, add_special_tokens=False)
        if len(tokens) != 1:
            raise ConfigError(
                f"judge {model}: the answer {answer!r} is {len(tokens)} tokens {tokens} in its tokenizer; the judge "
                "reads one token per answer: give two single-token answers, e.g. --answer-tokens A,B"
            )
        ids.append(tokens[0])
    if ids[0] == ids[1]:
        raise ConfigError(f"judge {model}: answers {tuple(answers)!r} are the same token; give two different ones")
    return ids[0], ids[1]


def model_name(model: str | os.PathLike) -> str:
    """How a judge is named in its labelers: a local folder's name, or the hub id as given."""
    path = Path(os.path.expanduser(str(model)))
    return path.resolve().name if path.is_dir() else str(model)


# ----------------------------------------------------------------------------- scoring
def first_answer_probs(
    model, ids: Sequence[Sequence[int]], answer_ids: tuple[int, int], *, pad_token_id: int, batch_size: int
) -> np.ndarray:
    """``P(answers[0]) / (P(answers[0]) + P(answers[1]))`` of the next token after each sequence (float64), in the
    order given, ``batch_size`` consecutive sequences per forward pass (the caller sorts them).

    Left padding with ``position_ids`` counted from each sequence's first real token; a batch without padding passes
    no mask. Only the last position's logits are computed (``logits_to_keep=1``).
    """
    import torch

    device = next(model.parameters()).device
    out = np.empty(len(ids), dtype=np.float64)
    first, second = answer_ids
    with torch.inference_mode():
        for start in range(0, len(ids), batch_size):
            batch = ids[start : start + batch_size]
            width = max(len(s) for s in batch)
            input_ids = torch.full((len(batch), width), pad_token_id, dtype=torch.long)
            mask = torch.zeros((len(batch), width), dtype=torch.long)
            for row, seq in enumerate(batch):
                input_ids[row, width - len(seq) :] = torch.as_tensor(seq, dtype=torch.long)
                mask[row, width - len(seq) :] = 1
            kwargs: dict[str, Any] = {"input_ids": input_ids.to(device), "logits_to_keep": 1}
            if not bool(mask.all()):
                kwargs["attention_mask"] = mask.to(device)
                kwargs["position_ids"] = (mask.cumsum(-1) - 1).clamp(min=0).to(device)
            logits = model(**kwargs).logits[:, -1, :].float()
            out[start : start + len(batch)] = torch.sigmoid(logits[:, first] - logits[:, second]).cpu().numpy()
    return out


@dataclass
class Judge:
    """A loaded judge: the model (eval mode, on the GPU when there is one), its left-padding tokenizer, the answers
    and their token ids, and the name its labelers carry."""

    model: Any
    tokenizer: Any
    name: str
    answers: tuple[str, str] = ANSWERS
    answer_ids: tuple[int, int] = field(default=(0, 0))


def load_judge(model: str | os.PathLike, preset: str = "full", answer_tokens: Sequence[str] = ANSWERS) -> Judge:
    """Load a causal LM as a judge through the method presets (``qlora``: 4-bit; ``full`` / ``lora``: the weights in
    the hardware's compute dtype) with left padding, and resolve its answer tokens."""
    from rlhfkit.models.sampling import load_for_sampling

    name = model_name(model)
    lm, tokenizer = load_for_sampling(model, preset)
    answers = (str(answer_tokens[0]), str(answer_tokens[1])) if len(answer_tokens) == 2 else tuple(answer_tokens)
    ids = answer_token_ids(tokenizer, answers, name)
    return Judge(lm, tokenizer, name, answers, ids)  # type: ignore[arg-type]


def encode_orders(judge: Judge, jobs: Sequence[tuple[str, Any, str, str]]) -> list[tuple[list[int], list[int]]]:
    """Token ids of each job ``(principle text, prompt, a, b)`` in both orders: ``(a shown first, b shown first)``."""
    from rlhfkit.models.sampling import encode_prompts

    messages = []
    for principle, prompt, a, b in jobs:
        messages.append(judging_messages(principle, prompt, a, b, judge.answers))
        messages.append(judging_messages(principle, prompt, b, a, judge.answers))
    ids = encode_prompts(judge.tokenizer, messages)
    return list(zip(ids[0::2], ids[1::2], strict=True))


def order_probs(judge: Judge, encoded: Sequence[tuple[list[int], list[int]]], batch_size: int) -> np.ndarray:
    """``p_orders`` of each encoded job, shape ``(n, 2)``: ``[P(a better | a first), P(a better | b first)]``.

    Jobs are sorted by length (longest first); a forward pass holds both orders of ``batch_size`` jobs."""
    order = sorted(range(len(encoded)), key=lambda n: -max(len(encoded[n][0]), len(encoded[n][1])))
    flat = [seq for n in order for seq in encoded[n]]
    pad = judge.tokenizer.pad_token_id
    probs = first_answer_probs(judge.model, flat, judge.answer_ids, pad_token_id=pad, batch_size=2 * batch_size)
    out = np.empty((len(encoded), 2), dtype=np.float64)
    out[order, 0] = probs[0::2]
    out[order, 1] = 1.0 - probs[1::2]  # b shown first: P(first) is P(b better)
    return out


def score_pairs(judge: Judge, jobs: Sequence[tuple[str, Any, str, str]], batch_size: int = 16) -> np.ndarray:
    """:func:`order_probs` of jobs ``(principle text, prompt, a, b)``: the judge's ``p_orders`` for each."""
    return order_probs(judge, encode_orders(judge, jobs), batch_size)


def vote_label(p: float, tie_margin: float) -> str:
    """``tie`` when ``|p - 0.5| < tie_margin``, else ``a`` (p > 0.5) or ``b``."""
    if abs(p - 0.5) < tie_margin:
        return "tie"
    return "a" if p > 0.5 else "b"


@dataclass(frozen=True)
class JudgeReport:
    """What :func:`judge_file` did. The statistics (:func:`~rlhfkit.data.judge_votes.judge_stats`) cover every vote
    of this judge's labelers on the file's items now in the votes file (earlier runs' included): ``n_pairs``
    judgements (item, pair, principle), ``n_written`` of them by this call, ``n_skipped`` already there."""

    model: str
    out: str
    n_pairs: int
    position_consistency: float | None
    left_choice_rate: float | None
    tie_rate: float | None
    n_written: int
    n_skipped: int
    labelers: tuple[str, ...]

    def to_dict(self) -> dict[str, Any]:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}


# ----------------------------------------------------------------------------- the file
def _check_options(tie_margin: float, principles_per_pair: int | None, n_principles: int, batch_size: int) -> None:
    if not (isinstance(tie_margin, int | float) and 0.0 <= tie_margin < 0.5):
        raise ConfigError(f"tie_margin={tie_margin!r} must be in [0, 0.5): a vote is a tie when |p - 0.5| < it")
    if principles_per_pair is not None and not (1 <= principles_per_pair <= n_principles):
        raise ConfigError(
            f"principles_per_pair={principles_per_pair!r} must be 1..{n_principles} (the constitution's principles),"
            " or None for all of them"
        )
    if not (isinstance(batch_size, int) and batch_size >= 1):
        raise ConfigError(f"batch_size={batch_size!r} must be a whole number >= 1 (pairs per forward pass)")


def _jobs(items, principles, name: str, principles_per_pair: int | None, seed: int) -> Iterator[tuple]:
    """Every judgement ``(item, (i, j), principle, labeler)`` of the file, in file order."""
    for item in items:
        for pair in itertools.combinations(range(len(item["responses"])), 2):
            chosen = principles
            if principles_per_pair is not None and principles_per_pair < len(principles):
                rng = random.Random(f"{seed}:{item['item_id']}:{pair[0]}:{pair[1]}")  # the same sample on every run
                chosen = rng.sample(list(principles), principles_per_pair)
            for principle in chosen:
                yield item, pair, principle, f"{JUDGE_PREFIX}{name}:{principle.name}"


@contextmanager
def _progress(total: int, description: str):
    """A transient rich bar on a terminal (nothing elsewhere); yields ``advance(n)``."""
    from rich.console import Console

    console = Console()
    if not console.is_terminal or total == 0:
        yield lambda n: None
        return
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn())
    with Progress(*columns, console=console, transient=True) as bar:
        task = bar.add_task(description, total=total)
        yield lambda n: bar.advance(task, n)


def judge_file(
    comparisons: str | os.PathLike,
    out: str | os.PathLike,
    *,
    model: str | os.PathLike,
    constitution: str | os.PathLike | None = None,
    tie_margin: float = 0.05,
    principles_per_pair: int | None = None,
    batch_size: int = 16,
    seed: int = 0,
    preset: str | None = "full",
    answer_tokens: Sequence[str] = ANSWERS,
) -> JudgeReport:
    """Judge every pair of every item of ``comparisons`` under the constitution, appending votes to ``out``.

    Args:
        comparisons: a comparisons file (:mod:`rlhfkit.data.comparisons`).
        out: the votes file to append to (created if absent; judgements already in it are skipped).
        model: the judge, a causal LM: a local model folder or a hub id (a lab judge is a folder:
            :func:`rlhfkit.feedback.lab_judge.build_judge`).
        constitution: a YAML list of ``{name, text}`` principles; None: :data:`DEFAULT_CONSTITUTION`.
        tie_margin: a vote is ``tie`` when the two-order probability is within this of 0.5.
        principles_per_pair: judge each pair under a seeded sample of this many principles (None: all).
        batch_size: pairs per forward pass (each in both orders: ``2 x batch_size`` sequences).
        seed: seeds the principle samples.
        preset: ``full`` | ``lora`` | ``qlora`` (4-bit), how the model is loaded (None: ``full``).
        answer_tokens: the two answers the judge is asked for (each one token of its tokenizer).
    Returns:
        A :class:`JudgeReport`. Nothing is printed (a progress bar shows on a terminal, and disappears).
    """
    items = read_comparisons(comparisons)
    principles = load_constitution(constitution)
    _check_options(tie_margin, principles_per_pair, len(principles), batch_size)
    name = model_name(model)
    out = Path(out)
    if out.is_dir():
        raise ConfigError(f"out {str(out)!r} is a folder; give a file name for the votes (appended to when it exists)")
    existing = read_vote_log(out) if out.exists() else []
    done = {(v["item_id"], tuple(sorted(v["pair"])), v["labeler"]) for v in existing if v["mode"] == "pairwise"}
    jobs = list(_jobs(items, principles, name, principles_per_pair, seed))
    todo = [job for job in jobs if (job[0]["item_id"], job[1], job[3]) not in done]
    written: list[dict[str, Any]] = []
    if todo:
        judge = load_judge(model, preset or "full", answer_tokens)
        written = _judge_jobs(judge, todo, out, tie_margin, batch_size, comparisons)
    labelers = tuple(sorted({job[3] for job in jobs}))
    ids = {item["item_id"] for item in items}
    mine = [v for v in existing if v["labeler"] in labelers and v["item_id"] in ids] + written
    return JudgeReport(
        model=name,
        out=str(out),
        **judge_stats(mine),
        n_written=len(written),
        n_skipped=len(jobs) - len(todo),
        labelers=labelers,
    )


def _judge_jobs(judge: Judge, jobs: list[tuple], out: Path, tie_margin: float, batch_size: int, source) -> list[dict]:
    """Score ``jobs`` chunk by chunk and append each chunk's votes to ``out``; returns the rows written."""
    limit = judge.tokenizer.model_max_length
    chunk = batch_size * CHUNK_BATCHES
    written: list[dict[str, Any]] = []
    with AppendLog(out) as log, _progress(len(jobs), f"judge {judge.name}") as advance:
        for start in range(0, len(jobs), chunk):
            part = jobs[start : start + chunk]
            encoded = encode_orders(
                judge,
                [(p.text, item["prompt"], item["responses"][i], item["responses"][j]) for item, (i, j), p, _ in part],
            )
            for (item, pair, principle, _), seqs in zip(part, encoded, strict=True):
                if limit < 1e9 and max(map(len, seqs)) > limit:
                    raise DataError(
                        f"{source}: item {item['item_id']}: the judging prompt of pair {list(pair)} under principle "
                        f"{principle.name!r} is {max(map(len, seqs))} tokens, over the judge's {limit}; shorten the "
                        "responses or use a judge with a longer context"
                    )
            probs = order_probs(judge, encoded, batch_size)
            rows = []
            for (item, (i, j), _, labeler), p_orders in zip(part, probs, strict=True):
                p = float(p_orders.mean())
                rows.append(
                    pairwise_vote(
                        item, labeler, (i, j), vote_label(p, tie_margin), [i, j], p=p, p_orders=p_orders.tolist()
                    )
                )
            log.append(*rows)
            written += rows
            advance(len(part))
    return written

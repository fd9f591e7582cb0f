"""Label Studio in and out: a Label Studio JSON export of a pairwise or ranking project read into vote rows
(:mod:`rlhfkit.data.votelog`), and a comparisons file written as tasks Label Studio imports, with the labeling config
to paste into the project.

Reading an export (:func:`read_export`, ``rlhfkit data convert EXPORT.json --format label-studio --out votes.jsonl``)
-----------------------------------------------------------------------------------------------------------------
Label Studio's JSON export (https://labelstud.io/guide/export.html, "Label Studio JSON format of annotated tasks") is
a list of tasks ``{"id", "data", "annotations": [...]}``. Each annotation has ``completed_by`` (a user id, or an
object with the user's ``email``), ``was_cancelled`` (the annotator skipped the task) and ``result``: a list of
``{"from_name", "to_name", "type", "value"}``. One result per annotation is the preference; three kinds are read:

``pairwise`` (the ``<Pairwise>`` tag: templates "Pairwise Classification" and "Human Preference collection for RLHF")
    ``value: {"selected": "left" | "right"}``, left being the first of the task's two responses. A pairwise vote on
    ``pair [0, 1]``, ``label`` ``a`` (left) or ``b``, ``shown_order [0, 1]`` (Label Studio shows the first response
    on the left on every task).
``ranker`` (``<List>`` + ``<Ranker>``: the "LLM Ranker" template, https://labelstud.io/tags/ranker.html)
    ``value: {"ranker": {"<ranker name>": [item ids, best first]}}`` (older versions: a bare list). A ranking vote
    without ties, ``shown_order`` the List's order. A Ranker with ``<Bucket>`` groups sorts items into named groups,
    not an order, and is refused.
``choices`` (a ``<Choices>`` tag with one choice per side, as many teams built pairwise projects before the Pairwise
tag: ``value: {"choices": ["Response A"]}``)
    read through a label map (``labels="Response A=a,Response B=b,Tie=tie"``, read by
    :func:`rlhfkit.data.votes.parse_labels`): a pairwise vote ``a``, ``b`` or ``tie``; a choice mapped to ``missing``
    is no vote.

Without ``from_name`` the annotation's one ``pairwise`` or ``ranker`` result is taken, else its one ``choices``
result; two candidates are an error that asks for ``from_name``. The labeler is the annotator's email, else their
Label Studio user id. The task's ``data`` holds the prompt (``prompt_col``, default ``prompt``: text, or chat
messages) and the responses (``responses_col``): two or more keys (``"answer1,answer2"``), or one key holding a list
(the List tag's ``{"id", "title", "body"}`` items, or texts); by default the first of :data:`RESPONSE_KEYS` the task
has. The vote rows carry ``item_id`` = :func:`rlhfkit.data.comparisons.item_id` of the prompt and the responses in
the task's order, so tasks written by :func:`export_tasks` get their comparisons' ids back.

Annotations that give no vote are dropped and counted by reason (cancelled, no preference result, a choice mapped to
``missing``); tasks nobody annotated are counted. A malformed task or annotation raises
:class:`~rlhfkit.core.errors.DataError` naming the file, the task id and the fix, or with ``on_bad_row="skip"`` is
skipped and counted. Predictions and drafts are not votes and are ignored.

Writing tasks (:func:`export_tasks`)
------------------------------------
K = 2 on every row: the "Human Preference collection for RLHF" data keys (``prompt``, ``answer1``, ``answer2``) and a
``<Pairwise>`` config; otherwise every row as a List of ``{"id": "<index>", "title", "body"}`` items (``items``) and a
``<Ranker>`` config. ``item_id`` rides along in ``data``. Chat prompts are shown with ``<Paragraphs>`` as a dialogue;
a file mixing text and chat prompts is refused (a project has one config). Label Studio shows ``<Text>`` values as
text, never as HTML.
"""

from __future__ import annotations

import os
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rlhfkit.core.errors import DataError
from rlhfkit.core.io import write_json, write_jsonl, write_text
from rlhfkit.data.comparisons import comparison_row, read_comparisons
from rlhfkit.data.rows import ON_BAD_ROW, BadRow, check_text, read_rows
from rlhfkit.data.votelog import pairwise_vote, ranking_vote
from rlhfkit.data.votes import label_key, parse_labels

PROMPT_KEY = "prompt"
# Where the responses are looked for in a task's data, in this order: the RLHF template (and export_tasks), the LLM
# Ranker template's List, rlhfkit's own column names, the Pairwise Classification template.
RESPONSE_KEYS = (("answer1", "answer2"), ("items",), ("response_a", "response_b"), ("text1", "text2"))
PREFERENCE_TYPES = ("pairwise", "ranker")  # taken before a "choices" result
_MAX_EXAMPLES = 5
_FIX_FORMAT = "export the project with Label Studio's JSON format (not JSON_MIN or CSV)"


@dataclass
class ExportReport:
    """What :func:`read_export` read: tasks (``unlabeled``: with no annotation), annotations, votes made, annotations
    ``dropped`` without a vote (by reason), malformed tasks or annotations ``skipped`` (by reason, with
    ``on_bad_row="skip"``) and the first skipped messages (``examples``)."""

    source: str
    tasks: int = 0
    unlabeled: int = 0
    annotations: int = 0
    votes: int = 0
    modes: Counter = field(default_factory=Counter)
    dropped: Counter = field(default_factory=Counter)
    skipped: Counter = field(default_factory=Counter)
    examples: list[str] = field(default_factory=list)

    def summary(self) -> str:
        """One line: ``source (label-studio): T tasks, A annotations -> V votes; dropped ...; skipped ...``."""
        modes = ", ".join(f"{m} {n}" for m, n in sorted(self.modes.items()))
        text = (
            f"{self.source} (label-studio): {self.tasks} tasks ({self.unlabeled} without annotations), "
            f"{self.annotations} annotations -> {self.votes} votes" + (f" ({modes})" if modes else "")
        )
        for label, counts in (("annotations without a vote", self.dropped), ("skipped", self.skipped)):
            if counts:
                text += f"; {label}: " + ", ".join(f"{k} {v}" for k, v in counts.most_common())
        return text


# ----------------------------------------------------------------------------------------------- reading
def read_export(
    source: Any,
    prompt_col: str = PROMPT_KEY,
    responses_col: str | list[str] | None = None,
    labels: str | dict | None = None,
    from_name: str | None = None,
    on_bad_row: str = "error",
) -> tuple[list[dict[str, Any]], ExportReport]:
    """The vote rows of a Label Studio JSON export (a path, or the list of tasks) and the report of what was read.

    ``responses_col``: the response keys of a task's data, ``"answer1,answer2"`` or a list, or one key holding a list;
    ``labels``: the label map of a ``<Choices>`` project; ``from_name``: the control tag whose results are the
    preference (see the module doc). Raises DataError when no vote is made.
    """
    if on_bad_row not in ON_BAD_ROW:
        raise DataError(f"on_bad_row={on_bad_row!r}; choose 'error' (stop at the first bad task) or 'skip'")
    label_map = parse_labels(labels) if labels is not None else None
    cols = _columns(responses_col)
    name, rows, _, _ = read_rows(source)
    report = ExportReport(source=name)
    votes: list[dict[str, Any]] = []
    for row_no, task in rows:
        report.tasks += 1
        task_name = f"task {task.get('id', f'in row {row_no}')}" if isinstance(task, dict) else f"row {row_no}"
        try:
            if isinstance(task, BadRow):
                raise task
            if not isinstance(task, dict):
                raise BadRow("not a task", f"is a {type(task).__name__}, not a task object", _FIX_FORMAT)
            annotations = task.get("annotations", [])
            if not isinstance(annotations, list):
                raise BadRow("not a task", "has 'annotations' that is not a list", _FIX_FORMAT)
            item, ids = _task_item(task, prompt_col, cols)
        except BadRow as bad:
            _bad_row(report, on_bad_row, f"{name}: {task_name}", bad)
            continue
        report.unlabeled += not annotations
        for ann in annotations:
            report.annotations += 1
            where = f"{name}: {task_name}, annotation {ann.get('id', '?') if isinstance(ann, dict) else '?'}"
            try:
                vote = _annotation_vote(task, ann, item, ids, from_name, label_map)
            except BadRow as bad:
                _bad_row(report, on_bad_row, where, bad)
                continue
            if isinstance(vote, str):
                report.dropped[vote] += 1
            else:
                votes.append(vote)
                report.modes[vote["mode"]] += 1
    report.votes = len(votes)
    if not votes:
        first = f"; first: {report.examples[0]}" if report.examples else ""
        raise DataError(f"no votes: {report.summary()}{first}; check the export and --from-name / --responses-col")
    return votes, report


def _columns(responses_col: str | list[str] | None) -> tuple[str, ...] | None:
    if responses_col is None:
        return None
    cols = responses_col.split(",") if isinstance(responses_col, str) else list(responses_col)
    cols = tuple(c.strip() for c in cols if c.strip())
    if not cols:
        raise DataError(f"responses_col={responses_col!r} names no key; give e.g. answer1,answer2 or items")
    return cols


def _bad_row(report: ExportReport, on_bad_row: str, where: str, bad: BadRow) -> None:
    message = f"{where}: {bad.problem}" + (f"; {bad.fix}" if bad.fix else "")
    if on_bad_row == "error":
        raise DataError(message) from None
    report.skipped[bad.kind] += 1
    if len(report.examples) < _MAX_EXAMPLES:
        report.examples.append(message)


def _task_item(task: dict, prompt_col: str, cols: tuple[str, ...] | None) -> tuple[dict[str, Any], list[str] | None]:
    """The comparisons row of a task (``item_id``, ``prompt``, ``responses``) and its List item ids (or None)."""
    data = task.get("data")
    if not isinstance(data, dict):
        raise BadRow("not a task", "has no 'data' object", _FIX_FORMAT)
    present = ", ".join(map(str, data)) or "none"
    if prompt_col not in data:
        raise BadRow(
            "missing data key",
            f"data has no {prompt_col!r} (keys: {present})",
            "name the prompt's key with prompt_col (CLI: --prompt-col)",
        )
    prompt = check_text(data[prompt_col], f"data {prompt_col!r}")
    if cols is None:
        cols = next((c for c in RESPONSE_KEYS if all(k in data for k in c)), None)
        if cols is None:
            raise BadRow(
                "missing data key",
                f"data has none of the response keys {', '.join('+'.join(c) for c in RESPONSE_KEYS)} "
                f"(keys: {present})",
                "name them with responses_col (CLI: --responses-col KEY_A,KEY_B, or one key holding a list)",
            )
    missing = [c for c in cols if c not in data]
    if missing:
        raise BadRow(
            "missing data key",
            f"data has no {missing[0]!r} (keys: {present})",
            "name the responses with responses_col (CLI: --responses-col)",
        )
    ids = None
    if len(cols) == 1:
        texts, ids = _list_items(data[cols[0]], cols[0])
    else:
        texts = [data[c] for c in cols]
    for key, text in zip(cols if len(cols) > 1 else [f"{cols[0]}[{i}]" for i in range(len(texts))], texts):
        if not isinstance(text, str):
            raise BadRow("wrong type", f"data {key!r} is {type(text).__name__}, not text", "responses are text")
    if len(set(texts)) != len(texts):
        raise BadRow("identical responses", "holds the same response twice", "drop the task: it compares nothing")
    return comparison_row(prompt, texts), ids


def _list_items(value: Any, key: str) -> tuple[list[Any], list[str]]:
    """Texts and ids of a List field: ``{"id", "body"}`` items (the List tag's data) or plain texts (ids 0, 1, ...)."""
    if not isinstance(value, list) or len(value) < 2:
        raise BadRow(
            "wrong type",
            f"data {key!r} is not a list of at least 2 responses",
            "give a list key (the List tag's items) or two keys with --responses-col KEY_A,KEY_B",
        )
    if all(isinstance(v, dict) for v in value):
        if not all("id" in v and "body" in v for v in value):
            raise BadRow("wrong type", f"data {key!r} items need 'id' and 'body' (the List tag's items)", "")
        ids = [str(v["id"]) for v in value]
        if len(set(ids)) != len(ids):
            raise BadRow("wrong type", f"data {key!r} repeats an item id", "give each item its own id")
        return [v["body"] for v in value], ids
    return list(value), [str(i) for i in range(len(value))]


def _labeler(completed_by: Any) -> str:
    """The annotator's email, else their Label Studio user id."""
    if isinstance(completed_by, dict):
        email = completed_by.get("email")
        if isinstance(email, str) and email.strip():
            return email.strip()
        completed_by = completed_by.get("id")
    if isinstance(completed_by, (int, str)) and not isinstance(completed_by, bool) and str(completed_by).strip():
        return str(completed_by).strip()
    raise BadRow(
        "no annotator",
        f"completed_by={completed_by!r} names no annotator",
        "export with the annotators' details (a user id or email in completed_by)",
    )


def _preference_result(results: list, from_name: str | None) -> dict | None:
    """The one result of an annotation that holds the preference (None: the annotation has none)."""
    if not all(isinstance(r, dict) for r in results):
        raise BadRow("not a task", "has a result that is not an object", _FIX_FORMAT)
    if from_name is not None:
        found = [r for r in results if r.get("from_name") == from_name]
    else:
        found = [r for r in results if r.get("type") in PREFERENCE_TYPES] or [
            r for r in results if r.get("type") == "choices"
        ]
    if len(found) > 1:
        names = ", ".join(sorted({str(r.get("from_name")) for r in found}))
        fix = "name the tag with from_name (CLI: --from-name)" if from_name is None else "keep one result per tag"
        raise BadRow("ambiguous result", f"has {len(found)} preference results (from_name: {names})", fix)
    return found[0] if found else None


def _annotation_vote(
    task: dict,
    ann: Any,
    item: dict[str, Any],
    ids: list[str] | None,
    from_name: str | None,
    label_map: dict[str, str] | None,
) -> dict[str, Any] | str:
    """The vote row of one annotation, or the reason it gives none."""
    if not isinstance(ann, dict):
        raise BadRow("not a task", f"an annotation is a {type(ann).__name__}, not an object", _FIX_FORMAT)
    if ann.get("was_cancelled"):
        return "cancelled (skipped in Label Studio)"
    results = ann.get("result", [])
    if not isinstance(results, list):
        raise BadRow("not a task", "has a 'result' that is not a list", _FIX_FORMAT)
    result = _preference_result(results, from_name)
    if result is None:
        return "no preference result"
    labeler = _labeler(ann.get("completed_by"))
    extra: dict[str, Any] = {"label_studio": {"task": task.get("id"), "annotation": ann.get("id")}}
    when = ann.get("updated_at") or ann.get("created_at")
    if isinstance(when, str) and when:
        extra["time"] = when
    if task.get("id") is not None and ann.get("id") is not None:
        extra["vote_id"] = f"ls-{task['id']}-{ann['id']}"  # the same export converts to the same rows
    kind, value, k = result.get("type"), result.get("value"), len(item["responses"])
    if not isinstance(value, dict):
        raise BadRow("bad result", f"result {result.get('from_name')!r} has no 'value' object", _FIX_FORMAT)
    if kind == "ranker":
        return ranking_vote(item, labeler, _ranking(value, ids), list(range(k)), **extra)
    if kind == "pairwise":
        label = {"left": "a", "right": "b"}.get(value.get("selected"))
        if label is None:
            raise BadRow("bad result", f"pairwise value {value!r} selects neither 'left' nor 'right'", _FIX_FORMAT)
    elif kind == "choices":
        label = _choice_label(value, label_map)
        if label == "missing":
            return "choice mapped to missing"
    else:
        raise BadRow(
            "bad result",
            f"result {result.get('from_name')!r} is a {kind!r} result, not pairwise, ranker or choices",
            "name the preference's tag with from_name (CLI: --from-name)",
        )
    if k != 2:
        raise BadRow(
            "bad result",
            f"a {kind} result compares 2 responses but the task has {k}",
            "name the two responses with responses_col (CLI: --responses-col KEY_A,KEY_B)",
        )
    return pairwise_vote(item, labeler, (0, 1), label, [0, 1], **extra)


def _ranking(value: dict, ids: list[str] | None) -> list[list[int]]:
    """A ranker value as a ranking of response indices, best first (one response per place)."""
    ranked = value.get("ranker")
    if isinstance(ranked, dict):
        if len(ranked) != 1 or "_" in ranked:
            raise BadRow(
                "bucketed ranker",
                f"is a Ranker with buckets ({', '.join(map(str, ranked))}): groups, not an order",
                "rank with a Ranker without <Bucket> tags (the LLM Ranker order)",
            )
        ranked = next(iter(ranked.values()))
    if not isinstance(ranked, list):
        raise BadRow("bad result", f"ranker value {value!r} holds no list of item ids", _FIX_FORMAT)
    if ids is None:
        raise BadRow(
            "bad result",
            "a ranker result ranks List items, but the responses were read from separate keys",
            "name the List's key with responses_col (CLI: --responses-col items)",
        )
    order = [str(x) for x in ranked]
    if sorted(order) != sorted(ids):
        raise BadRow(
            "bad result",
            f"ranks the items {order} but the task has {ids}",
            "every response must be ranked exactly once (a partial ranking is not a vote)",
        )
    return [[ids.index(x)] for x in order]


def _choice_label(value: dict, label_map: dict[str, str] | None) -> str:
    choices = value.get("choices")
    if not isinstance(choices, list) or len(choices) != 1:
        raise BadRow("bad result", f"choices value {value!r} is not one choice", "one choice per annotation")
    key = label_key(choices[0])
    if label_map is None:
        raise BadRow(
            "unmapped choice",
            f"is a <Choices> result {key!r} and no label map says which response it means",
            "map the choices with labels (CLI: --labels 'Response A=a,Response B=b,Tie=tie'; targets a, b, tie, "
            "missing)",
        )
    if key not in label_map:
        mapped = ", ".join(f"{k}={v}" for k, v in label_map.items())
        raise BadRow("bad label", f"choice {key!r} is not in the label map {mapped}", "add it to --labels")
    return label_map[key]


def write_votes(votes: list[dict[str, Any]], path: str | os.PathLike) -> Path:
    """Write vote rows to a votes file (``.jsonl``) atomically."""
    path = Path(path)
    if not path.name.endswith(".jsonl"):
        raise DataError(f"{str(path)!r}: a votes file is JSONL; name it e.g. votes.jsonl")
    return write_jsonl(path, votes)


# ----------------------------------------------------------------------------------------------- writing
PAIRWISE_CONFIG = """<View>
  <Header value="Which response is better? Click it."/>
  {prompt}
  <Pairwise name="comparison" toName="answer1,answer2"
            selectionStyle="background-color: #e6f4ea; border: 2px solid #34a853;"/>
  <View style="display: flex; gap: 1em;">
    <View style="flex: 1; padding: 0.5em; border: 1px solid #ccc;"><Text name="answer1" value="$answer1"/></View>
    <View style="flex: 1; padding: 0.5em; border: 1px solid #ccc;"><Text name="answer2" value="$answer2"/></View>
  </View>
</View>
"""
RANKER_CONFIG = """<View>
  <Header value="Drag the responses into order, best first."/>
  {prompt}
  <List name="answers" value="$items" title="Responses"/>
  <Ranker name="rank" toName="answers"/>
</View>
"""
TEXT_PROMPT = '<Text name="prompt" value="$prompt"/>'
CHAT_PROMPT = '<Paragraphs name="prompt" value="$prompt" layout="dialogue" nameKey="role" textKey="content"/>'


def export_tasks(comparisons_path: str | os.PathLike, out: str | os.PathLike) -> tuple[Path, Path]:
    """Write a comparisons file as Label Studio tasks (``out``, a JSON list to import) and the labeling config to
    paste into the project (``<out stem>.labelconfig.xml`` beside it); returns both paths.

    K = 2 everywhere: the Pairwise config; otherwise the Ranker config (see the module doc). :func:`read_export`
    reads the project's export back into votes on the same ``item_id``\\ s.
    """
    out = Path(out)
    if not out.name.endswith(".json"):
        raise DataError(f"{str(out)!r}: Label Studio imports a JSON list of tasks; name it e.g. tasks.json")
    rows = read_comparisons(comparisons_path)
    chat = {isinstance(r["prompt"], list) for r in rows}
    if len(chat) > 1:
        raise DataError(
            f"{comparisons_path}: mixes text and chat prompts; a Label Studio project shows one kind: split the file"
        )
    pairwise = all(len(r["responses"]) == 2 for r in rows)
    tasks = [{"data": _task_data(r, pairwise)} for r in rows]
    config = (PAIRWISE_CONFIG if pairwise else RANKER_CONFIG).format(
        prompt=CHAT_PROMPT if True in chat else TEXT_PROMPT
    )
    config_path = out.with_name(out.name[: -len(".json")] + ".labelconfig.xml")
    write_json(out, tasks)
    write_text(config_path, config)
    return out, config_path


def _task_data(row: dict[str, Any], pairwise: bool) -> dict[str, Any]:
    data: dict[str, Any] = {"item_id": row["item_id"], "prompt": row["prompt"]}
    if pairwise:
        data["answer1"], data["answer2"] = row["responses"]
    else:
        data["items"] = [
            {"id": str(i), "title": f"Response {i + 1}", "body": text} for i, text in enumerate(row["responses"])
        ]
    return data


def import_note(tasks_path: Path, config_path: Path) -> str:
    """What to do with :func:`export_tasks`' files in Label Studio, for the command line to print."""
    return (
        f"in Label Studio: paste {config_path} into the project's Settings > Labeling Interface > Code, import "
        f"{tasks_path}, label, export as JSON; then `rlhfkit data convert EXPORT.json --format label-studio "
        "--out votes.jsonl`"
    )

"""One labeling session of ``rlhfkit label``: a comparisons file, its votes file, the labelers' secrets, and what the
page asks and answers -- everything but HTTP (:mod:`rlhfkit.feedback.server`).

**Nothing is lost, nothing is written twice.** Every action of the page (a vote, an undo) carries an id the page
draws once per action (``vote_id``, 8-64 characters of ``[A-Za-z0-9_-]``) and repeats when it retries. The session
appends the row under that id to the votes file through :class:`~rlhfkit.data.comparisons.AppendLog` (flushed and
fsynced, one writer: a lock around check, append and state) and only then answers; the page moves on only after the
answer. An id the file already holds is answered as done and not written again, so a request retried after a lost
answer or a restart (the state is rebuilt from the votes file) lands once. An undo is a row of its own
(:func:`~rlhfkit.data.votelog.undo_row`).

**What the page sends is checked**: the labeler's name, the task (an item of the comparisons file, a pair of its
responses in pairwise mode), that the labeler has not answered it, and the answer. The page answers in what it
showed (``left`` / ``right`` / ``tie``; a ranking of the shown positions 1..K, ties as one list); the session maps it
back to the comparisons file's order with the same seeded ``shown_order`` it showed, and records that order.

**Secrets**: with named labelers (:func:`load_keys`), each has a secret and the status page one of its own, kept in
``<votes>.keys.json`` beside the votes file (written once, mode 0600, so a restart keeps the links valid).
"""

from __future__ import annotations

import json
import os
import re
import secrets
import threading
from pathlib import Path
from typing import Any
from urllib.parse import quote

from rlhfkit.core.errors import ConfigError, DataError
from rlhfkit.core.io import atomic_path
from rlhfkit.data.comparisons import AppendLog, read_comparisons
from rlhfkit.data.votelog import MARGINS, MODES, pairwise_vote, ranking_vote, read_vote_rows, undo_row
from rlhfkit.feedback.assign import Assigner, Task, shown_order

NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._@-]{0,63}")  # a labeler's name: what the link and the votes carry
ACTION_ID = re.compile(r"[A-Za-z0-9_-]{8,64}")  # the page's id of one action (a vote or an undo)
MAX_RANKED = 9  # ranking mode numbers the responses with the keys 1-9
CHOICES = ("left", "right", "tie")


class Refused(Exception):
    """A request the session will not carry out: the HTTP status and one line saying why."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status, self.message = status, message


def keys_path(votes: str | os.PathLike) -> Path:
    """Where the labelers' secrets of a votes file live: ``votes.jsonl`` -> ``votes.keys.json``."""
    return Path(votes).with_suffix(".keys.json")


def load_keys(path: str | os.PathLike, labelers: list[str]) -> dict[str, Any]:
    """``{"labelers": {name: secret}, "status": secret}`` from ``path``, with a new secret for every name not there
    yet (the file is written then, atomically, readable by its owner only). Names kept in the file and not in
    ``labelers`` keep their secret but are not let in."""
    path = Path(path)
    keys: dict[str, Any] = {"labelers": {}, "status": secrets.token_urlsafe(16)}
    if path.exists():
        try:
            keys = json.loads(path.read_text(encoding="utf-8"))
        except ValueError:
            keys = None
        if not (
            isinstance(keys, dict) and isinstance(keys.get("labelers"), dict) and isinstance(keys.get("status"), str)
        ):
            raise DataError(f"{path} is not a keys file of `rlhfkit label`; move it away or pass another --out")
    missing = [name for name in labelers if name not in keys["labelers"]]
    if missing or not path.exists():
        keys["labelers"].update({name: secrets.token_urlsafe(16) for name in missing})
        with atomic_path(path) as tmp:
            tmp.touch(mode=0o600)
            tmp.write_text(json.dumps(keys, indent=2) + "\n", encoding="utf-8")
    return {"labelers": {name: keys["labelers"][name] for name in labelers}, "status": keys["status"]}


def check_name(labeler: str) -> str:
    """``labeler`` if it is a valid name, else :class:`Refused` (400) saying what a name may hold."""
    if not isinstance(labeler, str) or not NAME.fullmatch(labeler):
        raise Refused(400, f"labeler={labeler!r}: open the page as /?labeler=NAME (letters, digits, . _ @ -; <= 64)")
    return labeler


class LabelSession:
    """The state of one ``rlhfkit label`` run. Every public method is safe to call from several threads at once.

    Args:
        comparisons: the comparisons file (:func:`~rlhfkit.data.comparisons.read_comparisons`; a bad row refuses).
        votes: the votes file, appended to (created if absent; its rows rebuild the state).
        mode: ``pairwise`` or ``ranking``; a votes file holding votes of the other mode is refused.
        overlap: how many labelers answer each task (:mod:`rlhfkit.feedback.assign`).
        seed: seeds each labeler's order of the tasks and the order the responses are shown in.
        labelers: names that get a secret each (:func:`load_keys`); anyone else is refused. None: any name, no secret.
    """

    def __init__(
        self,
        comparisons: str | os.PathLike,
        votes: str | os.PathLike,
        *,
        mode: str = "pairwise",
        overlap: int = 1,
        seed: int = 0,
        labelers: list[str] | None = None,
    ):
        if mode not in MODES:
            raise ConfigError(f"mode={mode!r} must be one of {', '.join(MODES)}")
        if overlap < 1:
            raise ConfigError(f"overlap={overlap} must be >= 1 (labelers per item)")
        self.comparisons, self.votes_path = Path(comparisons), Path(votes)
        if self.votes_path.is_dir() or self.votes_path.resolve() == self.comparisons.resolve():
            raise ConfigError(f"--out {votes} must be a votes file (.jsonl) of its own, not a folder or COMPARISONS")
        items = read_comparisons(comparisons)
        if mode == "ranking":
            _check_rankable(items, self.comparisons)
        for name in labelers or ():
            check_name(name)
        existed = self.votes_path.exists()
        # One server per votes file: the log's lock is held until close(), so a second `rlhfkit label` on the same
        # file (which would keep its own idea of who answered what) is refused; the file is read under that lock.
        self.log = AppendLog(votes, exclusive=True)
        try:
            rows = read_vote_rows(votes) if existed else []
            _check_mode(rows, mode, self.votes_path)
            self.mode, self.seed = mode, seed
            self.assigner = Assigner(items, mode, overlap, seed)
            for row in rows:
                self.assigner.record(row)
            self.keys = load_keys(keys_path(votes), labelers) if labelers else None
        except BaseException:
            self.log.close()
            if not existed:
                self.votes_path.unlink(missing_ok=True)  # ours, empty: the folder is left as it was
            raise
        self.lock = threading.Lock()

    # ------------------------------------------------------------------------------ who may
    def allowed(self, labeler: str, key: str | None) -> bool:
        """Whether ``labeler`` with ``key`` may label (always, without named labelers)."""
        if self.keys is None:
            return True
        secret = self.keys["labelers"].get(labeler)
        return secret is not None and key is not None and secrets.compare_digest(secret, key)

    def status_allowed(self, key: str | None) -> bool:
        """Whether ``key`` opens the status page (always, without named labelers)."""
        return self.keys is None or (key is not None and secrets.compare_digest(self.keys["status"], key))

    def links(self, base: str) -> list[tuple[str, str]]:
        """``(name, link)`` of each named labeler (with their secret) -- or, without named labelers, of each labeler
        who has voted and of the template ``NAME`` -- and of the status page."""
        if self.keys is not None:
            rows = [(n, f"{base}/?labeler={quote(n)}&key={k}") for n, k in self.keys["labelers"].items()]
            return rows + [("status", f"{base}/status?key={self.keys['status']}")]
        names = sorted(self.assigner.done)
        return [(n, f"{base}/?labeler={quote(n)}") for n in ["NAME", *names]] + [("status", f"{base}/status")]

    # ------------------------------------------------------------------------------ what the page asks
    def task(self, labeler: str) -> dict[str, Any]:
        """What the page shows ``labeler`` now: their progress and their next task (None: all done)."""
        check_name(labeler)
        with self.lock:
            return self._payload(labeler)

    def vote(self, labeler: str, body: dict[str, Any]) -> dict[str, Any]:
        """Record one answer (``vote_id``, ``item_id``, ``pair`` and ``choice`` + optional ``margin``, or
        ``ranking``), fsynced, then return the next task; an id already recorded is answered, not written again."""
        check_name(labeler)
        vote_id = _action_id(body)
        with self.lock:
            if self._recorded(vote_id, labeler):
                return self._payload(labeler, duplicate=True)
            task = self._task(body)
            if task in self.assigner.done.get(labeler, {}):
                raise Refused(409, f"{labeler} has already answered item {task.item_id}; press u to undo that vote")
            item = self.assigner.items[task.item_id]
            shown = shown_order(task, len(item["responses"]), labeler, self.seed)
            row = _vote_row(item, task, shown, labeler, body, vote_id)
            self.log.append(row)
            self.assigner.record(row)
            return self._payload(labeler, saved=vote_id)

    def undo(self, labeler: str, body: dict[str, Any]) -> dict[str, Any]:
        """Take back ``labeler``'s last standing vote (a new row, fsynced) and return that task to answer again."""
        check_name(labeler)
        undo_id = _action_id(body)
        with self.lock:
            if self._recorded(undo_id, labeler):
                return self._payload(labeler, duplicate=True)
            last = self.assigner.last_vote(labeler)
            if last is None:
                return self._payload(labeler, undone=None)
            row = {**undo_row(last), "vote_id": undo_id}
            self.log.append(row)
            self.assigner.record(row)
            return self._payload(labeler, undone=last["vote_id"])

    def counts(self) -> tuple[dict[str, Any], list[dict[str, Any]]]:
        """The status counts (:meth:`~rlhfkit.feedback.assign.Assigner.counts` plus the files and settings) and the
        standing votes, in file order."""
        a = self.assigner
        with self.lock:
            counts, standing = a.counts(), list(a.standing.values())
        head = {
            "comparisons": str(self.comparisons),
            "votes_file": str(self.votes_path),
            "mode": self.mode,
            "overlap": a.overlap,
            "items": len(a.items),
        }
        return {**head, **counts}, standing

    def close(self) -> None:
        self.log.close()

    # ------------------------------------------------------------------------------ helpers
    def _payload(self, labeler: str, **extra: Any) -> dict[str, Any]:
        a = self.assigner
        task = a.next_task(labeler)
        out: dict[str, Any] = {"labeler": labeler, "mode": self.mode, "margins": list(MARGINS), **a.progress(labeler)}
        out["task"] = None
        if task is not None:
            item = a.items[task.item_id]
            shown = shown_order(task, len(item["responses"]), labeler, self.seed)
            out["task"] = {
                "item_id": task.item_id,
                "pair": list(task.pair) if task.pair else None,
                "prompt": item["prompt"],
                "responses": [item["responses"][i] for i in shown],
            }
        return {**out, **extra}

    def _recorded(self, action_id: str, labeler: str) -> bool:
        row = self.assigner.rows_by_id.get(action_id)
        if row is None:
            return False
        if row["labeler"] != labeler:
            raise Refused(409, f"vote_id {action_id!r} belongs to another labeler; the page draws a new id per action")
        return True

    def _task(self, body: dict[str, Any]) -> Task:
        item_id, pair = body.get("item_id"), body.get("pair")
        if item_id not in self.assigner.items:
            raise Refused(400, f"item_id={item_id!r} is not an item of {self.comparisons}")
        if self.mode == "ranking":
            return Task(item_id, None)
        if not (isinstance(pair, list) and len(pair) == 2 and all(type(i) is int for i in pair) and pair[0] < pair[1]):
            raise Refused(400, f"pair={pair!r} must be two response indices i < j (pairwise mode)")
        task = Task(item_id, (pair[0], pair[1]))
        if task not in self.assigner.votes_on:
            raise Refused(400, f"pair={pair!r} is not a pair of item {item_id}'s responses")
        return task


def _action_id(body: dict[str, Any]) -> str:
    action_id = body.get("vote_id")
    if not isinstance(action_id, str) or not ACTION_ID.fullmatch(action_id):
        raise Refused(400, f"vote_id={action_id!r} must be 8-64 characters of A-Z a-z 0-9 _ - (one per action)")
    return action_id


def _vote_row(
    item: dict[str, Any], task: Task, shown: list[int], labeler: str, body: dict[str, Any], vote_id: str
) -> dict[str, Any]:
    """The votes-file row of an answer given in the shown order, in the comparisons file's order."""
    if task.pair is None:
        return ranking_vote(item, labeler, _ranking(body.get("ranking"), shown), shown, vote_id=vote_id)
    choice, margin = body.get("choice"), body.get("margin")
    if choice not in CHOICES:
        raise Refused(400, f"choice={choice!r} must be one of {', '.join(CHOICES)}")
    if margin is not None and (choice == "tie" or margin not in MARGINS):
        raise Refused(400, f"margin={margin!r} goes with left or right and is one of {', '.join(MARGINS)}")
    label = "tie" if choice == "tie" else ("a" if shown[CHOICES.index(choice)] == task.pair[0] else "b")
    return pairwise_vote(item, labeler, task.pair, label, shown, margin=margin, vote_id=vote_id)


def _ranking(positions: Any, shown: list[int]) -> list[list[int]]:
    """A ranking of shown positions (1..K, best first, ties as one list) as response indices of the file."""
    k = len(shown)
    flat = [p for group in positions for p in group] if isinstance(positions, list) else None
    if (
        flat is None
        or not all(isinstance(g, list) and g for g in positions)
        or sorted(p for p in flat if type(p) is int) != list(range(1, k + 1))
        or len(flat) != k
    ):
        raise Refused(400, f"ranking={positions!r} must name each shown response 1..{k} once, best first")
    return [[shown[p - 1] for p in group] for group in positions]


def _check_rankable(items: list[dict[str, Any]], path: Path) -> None:
    for item in items:
        if len(item["responses"]) > MAX_RANKED:
            raise DataError(
                f"{path}: item {item['item_id']} has {len(item['responses'])} responses; ranking mode numbers them "
                f"with the keys 1-{MAX_RANKED}: label it with --mode pairwise or sample at most {MAX_RANKED}"
            )


def _check_mode(rows: list[dict[str, Any]], mode: str, path: Path) -> None:
    other = next((r for r in rows if "undoes" not in r and r["mode"] != mode), None)
    if other is not None:
        raise DataError(
            f"{path} holds {other['mode']} votes (vote {other['vote_id']}); label it with --mode {other['mode']} "
            f"or pass another --out for {mode} votes"
        )

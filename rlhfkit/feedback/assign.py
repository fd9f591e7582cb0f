"""Who labels what next on the labeling page: the tasks of a comparisons file, each labeler's seeded order, the
overlap, the order the responses are shown in, and where a labeler who comes back continues.

A **task** is one question a labeler answers. In ranking mode it is an item (order all K responses). In pairwise
mode it is one pair of an item's responses, and every pair is asked: C(K, 2) tasks per item, as InstructGPT turned
each ranking of K into its C(K, 2) comparisons (K = 2: one task per item). For K > 3 ranking mode asks for the same
information in one answer.

Each labeler walks the tasks in an order of their own (a permutation seeded by ``seed`` and their name) and gets the
first task they have not answered that still needs votes: fewer than ``overlap`` standing votes, counting the tasks
other labelers hold open (a task served and not yet answered holds its place for :data:`CLAIM_SECONDS`). A labeler
never gets a task twice, and one who comes back (or a server restarted) continues where they stopped: the state is
rebuilt from the votes file's rows alone. A vote is never refused for overlap: a task answered by more labelers than
asked (an expired hold) keeps every vote.

The responses are shown in an order seeded by ``seed``, the labeler and the task, so each labeler sees each item in
its own left-to-right order (recorded in the vote's ``shown_order``) and position bias can be measured.

Deliberately omitted: steering labelers towards tasks others have started (each keeps their own order, so items
reach ``overlap`` votes at random times), and weighting tasks by difficulty.
"""

from __future__ import annotations

import itertools
import random
import time
from collections import Counter
from collections.abc import Callable, Iterable
from typing import Any, NamedTuple

CLAIM_SECONDS = 600.0  # a task served and not answered counts towards the overlap for 10 minutes


class Task(NamedTuple):
    """One question: an item, and in pairwise mode the pair ``(i, j)``, ``i < j``, of its responses (None in ranking
    mode)."""

    item_id: str
    pair: tuple[int, int] | None


def tasks_of(items: Iterable[dict[str, Any]], mode: str) -> list[Task]:
    """The tasks of comparisons rows, in file order (pairwise: every pair of each item's responses)."""
    if mode == "ranking":
        return [Task(item["item_id"], None) for item in items]
    return [
        Task(item["item_id"], pair)
        for item in items
        for pair in itertools.combinations(range(len(item["responses"])), 2)
    ]


def task_of_vote(vote: dict[str, Any]) -> Task:
    """The task a vote row answers."""
    if vote["mode"] == "ranking":
        return Task(vote["item_id"], None)
    i, j = vote["pair"]
    return Task(vote["item_id"], (min(i, j), max(i, j)))


def shown_order(task: Task, k: int, labeler: str, seed: int) -> list[int]:
    """The response indices as ``labeler`` sees ``task``, left to right (seeded by ``seed``, the labeler and the
    task; the same on every call and every restart)."""
    order = list(task.pair) if task.pair is not None else list(range(k))
    random.Random(f"{seed}|{labeler}|{task.item_id}|{task.pair}").shuffle(order)
    return order


class Assigner:
    """The labeling state of one comparisons file: the standing votes per task and labeler, the open tasks.

    Built from the votes file's rows (:meth:`record` each, in order), then kept up to date by the server, which
    holds a lock around every call (this class is not thread-safe). Votes on items that are not in ``items`` (or of
    another mode) are kept in the file and ignored here.

    Args:
        items: the comparisons rows (:func:`rlhfkit.data.comparisons.read_comparisons`).
        mode: ``pairwise`` or ``ranking``.
        overlap: how many labelers answer each task.
        seed: seeds each labeler's order and the order the responses are shown in.
        clock: seconds, for the open tasks' hold (``time.monotonic``; tests pass their own).
    """

    def __init__(
        self,
        items: list[dict[str, Any]],
        mode: str,
        overlap: int = 1,
        seed: int = 0,
        clock: Callable[[], float] = time.monotonic,
    ):
        self.items = {item["item_id"]: item for item in items}
        self.mode, self.overlap, self.seed, self.clock = mode, overlap, seed, clock
        self.tasks = tasks_of(items, mode)
        self._known = set(self.tasks)
        self.rows_by_id: dict[str, dict[str, Any]] = {}  # every row recorded (votes and undo rows), by vote_id
        self.standing: dict[str, dict[str, Any]] = {}  # votes not undone, in file order
        self.votes_on: dict[Task, list[str]] = {t: [] for t in self.tasks}  # standing vote ids per task
        self.done: dict[str, dict[Task, str]] = {}  # labeler -> task -> their standing vote id
        self.history: dict[str, list[str]] = {}  # labeler -> their standing vote ids, in order (undo takes the last)
        self.claims: dict[str, tuple[Task, float]] = {}  # labeler -> the task served to them, and when
        self._orders: dict[str, list[Task]] = {}

    # ------------------------------------------------------------------------------ the state
    def record(self, row: dict[str, Any]) -> None:
        """Take one row of the votes file into account (a vote or an undo row), as the file holds it."""
        self.rows_by_id[row["vote_id"]] = row
        if "undoes" in row:
            self._forget(row["undoes"])
            return
        task = task_of_vote(row)
        if row["mode"] != self.mode or task not in self._known:
            return
        labeler = row["labeler"]
        self.standing[row["vote_id"]] = row
        self.votes_on[task].append(row["vote_id"])
        self.done.setdefault(labeler, {})[task] = row["vote_id"]
        self.history.setdefault(labeler, []).append(row["vote_id"])
        if self.claims.get(labeler, (None,))[0] == task:
            del self.claims[labeler]

    def _forget(self, vote_id: str) -> None:
        vote = self.standing.pop(vote_id, None)
        if vote is None:
            return
        task, labeler = task_of_vote(vote), vote["labeler"]
        self.votes_on[task].remove(vote_id)
        if self.done[labeler].get(task) == vote_id:
            del self.done[labeler][task]
        self.history[labeler].remove(vote_id)
        self.claims[labeler] = (task, self.clock())  # the undone task is what this labeler answers next

    def last_vote(self, labeler: str) -> dict[str, Any] | None:
        """The labeler's latest standing vote (what ``u`` undoes), or None."""
        ids = self.history.get(labeler)
        return self.standing[ids[-1]] if ids else None

    # ------------------------------------------------------------------------------ who gets what
    def order(self, labeler: str) -> list[Task]:
        """The tasks in ``labeler``'s own seeded order."""
        if labeler not in self._orders:
            order = list(self.tasks)
            random.Random(f"{self.seed}|{labeler}").shuffle(order)
            self._orders[labeler] = order
        return self._orders[labeler]

    def next_task(self, labeler: str) -> Task | None:
        """The task ``labeler`` answers now (held for them), or None when nothing is left for them."""
        held = self.claims.get(labeler)
        if held is not None and held[0] not in self.done.get(labeler, {}):
            self.claims[labeler] = (held[0], self.clock())
            return held[0]
        now = self.clock()
        held_by_others = Counter(
            task for who, (task, since) in self.claims.items() if who != labeler and now - since < CLAIM_SECONDS
        )
        mine = self.done.get(labeler, {})
        for task in self.order(labeler):
            if task not in mine and len(self.votes_on[task]) + held_by_others[task] < self.overlap:
                self.claims[labeler] = (task, now)
                return task
        self.claims.pop(labeler, None)
        return None

    def progress(self, labeler: str) -> dict[str, int]:
        """``done``: the labeler's standing votes; ``left``: the tasks they have not answered that still need votes
        (other labelers may take some of them first)."""
        mine = self.done.get(labeler, {})
        left = sum(1 for t in self.tasks if t not in mine and len(self.votes_on[t]) < self.overlap)
        return {"done": len(mine), "left": left}

    def counts(self) -> dict[str, Any]:
        """Tasks with enough votes, started, in total; standing votes; each labeler's done / left."""
        n_votes = [len(v) for v in self.votes_on.values()]
        return {
            "tasks": len(self.tasks),
            "tasks_complete": sum(n >= self.overlap for n in n_votes),
            "tasks_started": sum(n > 0 for n in n_votes),
            "votes": sum(n_votes),
            "labelers": {name: self.progress(name) for name in sorted(self.done)},
        }

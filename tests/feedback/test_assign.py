"""Who labels what: tasks, each labeler's seeded order, overlap, holds, undo, the shown order."""

from itertools import combinations

from rlhfkit.data.comparisons import comparison_row
from rlhfkit.data.votelog import pairwise_vote, ranking_vote, undo_row
from rlhfkit.feedback.assign import CLAIM_SECONDS, Assigner, Task, shown_order, task_of_vote, tasks_of


def _items(n=6, k=2):
    return [comparison_row(f"p{i}", [f"r{i}-{j}" for j in range(k)]) for i in range(n)]


def _answer(assigner, labeler, task):
    item = assigner.items[task.item_id]
    shown = shown_order(task, len(item["responses"]), labeler, assigner.seed)
    if task.pair is None:
        row = ranking_vote(item, labeler, [[i] for i in shown], shown)
    else:
        row = pairwise_vote(item, labeler, task.pair, "a", shown)
    assigner.record(row)
    return row


def test_pairwise_asks_every_pair_and_ranking_every_item():
    items = _items(2, k=3)
    assert tasks_of(items, "pairwise") == [Task(it["item_id"], p) for it in items for p in combinations(range(3), 2)]
    assert tasks_of(items, "ranking") == [Task(it["item_id"], None) for it in items]


def test_overlap_gives_each_task_to_n_labelers_never_twice_to_one():
    a = Assigner(_items(7), "pairwise", overlap=2, seed=3)
    seen = {name: [] for name in ("ann", "bob", "cyd")}
    active = list(seen)
    while active:  # the labelers take turns, one task at a time, as people at a page would
        for name in list(active):
            task = a.next_task(name)
            if task is None:
                active.remove(name)
                continue
            seen[name].append(task)
            _answer(a, name, task)
    assert all(len(votes) == 2 for votes in a.votes_on.values())
    assert all(len(set(tasks)) == len(tasks) for tasks in seen.values())
    assert sum(map(len, seen.values())) == 14
    assert a.counts()["tasks_complete"] == 7 and a.progress("ann")["left"] == 0


def test_each_labeler_has_their_own_order_rebuilt_the_same_from_the_votes():
    items = _items(20)
    a = Assigner(items, "pairwise", overlap=3, seed=0)
    assert a.order("ann") != a.order("bob")  # 20! orders: equal only by a broken seed
    rows = [_answer(a, "ann", a.next_task("ann")) for _ in range(5)]
    again = Assigner(items, "pairwise", overlap=3, seed=0)
    for row in rows:
        again.record(row)
    assert again.order("ann") == a.order("ann")
    assert again.next_task("ann") == a.next_task("ann")  # a labeler who comes back continues where they stopped
    assert again.progress("ann") == {"done": 5, "left": 15}


def test_a_task_served_is_held_for_its_labeler_until_the_hold_expires():
    now = [0.0]
    a = Assigner(_items(1), "pairwise", overlap=1, clock=lambda: now[0])
    task = a.next_task("ann")
    assert a.next_task("bob") is None  # ann holds the only task
    assert a.next_task("ann") == task  # a reload shows ann the same task
    now[0] += CLAIM_SECONDS + 1
    assert a.next_task("bob") == task  # ann went away: bob gets it
    _answer(a, "bob", task)
    _answer(a, "ann", task)  # ann's late vote is kept, not refused
    assert len(a.votes_on[task]) == 2


def test_undo_takes_the_last_vote_back_and_asks_it_again():
    a = Assigner(_items(4), "pairwise", overlap=1)
    first = _answer(a, "ann", a.next_task("ann"))
    second = _answer(a, "ann", a.next_task("ann"))
    assert a.last_vote("ann") == second
    a.record(undo_row(second))
    assert a.last_vote("ann") == first and a.progress("ann")["done"] == 1
    assert a.next_task("ann") == task_of_vote(second)
    assert a.counts()["votes"] == 1


def test_the_shown_order_is_seeded_per_labeler_and_task():
    task = Task("x", None)
    orders = {tuple(shown_order(task, 4, f"labeler{i}", 0)) for i in range(30)}
    assert len(orders) > 1 and all(sorted(o) == [0, 1, 2, 3] for o in orders)
    assert shown_order(task, 4, "ann", 0) == shown_order(task, 4, "ann", 0)
    assert sorted(shown_order(Task("x", (1, 3)), 4, "ann", 0)) == [1, 3]

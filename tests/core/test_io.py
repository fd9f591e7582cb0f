"""rlhfkit.core.io: the one JSON-safe conversion and the one figure writer (atomic, closes the figure)."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from rlhfkit.core.io import json_safe, pyplot, save_figure, write_json


def test_json_safe_gives_strict_json_with_numbers_as_numbers():
    obj = {
        "nan": math.nan, "inf": [math.inf, -math.inf, (1, 2.5)], 3: {"x": np.float32(0.5)},
        "np": [np.int64(7), np.bool_(True), np.float64(np.nan), np.array(1.25)], "keep": [None, "s", False, 4],
    }  # fmt: skip
    safe = json_safe(obj)
    assert safe == {
        "nan": None, "inf": [None, None, [1, 2.5]], "3": {"x": 0.5},
        "np": [7, True, None, 1.25], "keep": [None, "s", False, 4],
    }  # fmt: skip
    assert [type(v) for v in safe["np"]] == [int, bool, type(None), float]
    assert json.loads(json.dumps(safe, allow_nan=False)) == safe


def test_write_json_writes_numpy_scalars_as_numbers(tmp_path):
    path = write_json(tmp_path / "m.json", {"acc": np.float32(0.75), "n": np.int64(3), "bad": math.nan})
    assert json.loads(path.read_text()) == {"acc": 0.75, "n": 3, "bad": None}


def test_save_figure_writes_a_png_atomically_and_closes_the_figure(tmp_path, monkeypatch):
    plt = pyplot()
    fig, ax = plt.subplots()
    ax.plot([0, 1], [1, 0])
    path = save_figure(fig, tmp_path / "plots" / "a.png")
    assert path.read_bytes()[:4] == b"\x89PNG" and not plt.fignum_exists(fig.number)

    def fail(*args, **kwargs):
        raise OSError("disk full")

    fig, _ = plt.subplots()
    monkeypatch.setattr(type(fig), "savefig", fail)
    with pytest.raises(OSError, match="disk full"):
        save_figure(fig, tmp_path / "plots" / "b.png")
    assert [p.name for p in (tmp_path / "plots").iterdir()] == ["a.png"]  # no b.png, no temporary file
    assert not plt.fignum_exists(fig.number)


def test_atomic_path_never_replaces_a_folder_with_a_file_or_back(tmp_path):
    from rlhfkit.core.errors import ConfigError
    from rlhfkit.core.io import atomic_path, write_text

    folder = tmp_path / "pairs.jsonl"
    (folder / "mine").mkdir(parents=True)
    (folder / "mine" / "notes.txt").write_text("keep me")
    with pytest.raises(ConfigError, match="is a folder; rlhfkit will not replace it with a file"):
        write_text(folder, "x")
    assert (folder / "mine" / "notes.txt").read_text() == "keep me"
    (tmp_path / "report").write_text("a file")
    with pytest.raises(ConfigError, match="is a file; rlhfkit will not replace it with a folder"):
        with atomic_path(tmp_path / "report") as tmp:
            tmp.mkdir()
            (tmp / "x").write_text("y")
    assert (tmp_path / "report").read_text() == "a file"
    with pytest.raises(ConfigError, match="report' is a file; choose another path"):
        write_text(tmp_path / "report" / "sub" / "x.json", "{}")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["pairs.jsonl", "report"]  # no temporary file left


def test_atomic_path_cleans_its_temporary_folder_on_failure_and_replaces_a_folder(tmp_path):
    from rlhfkit.core.io import atomic_path

    with pytest.raises(RuntimeError, match="killed"):
        with atomic_path(tmp_path / "model") as tmp:
            tmp.mkdir()
            (tmp / "weights").write_text("half")
            raise RuntimeError("killed")
    assert list(tmp_path.iterdir()) == []
    for text in ("first", "second"):
        with atomic_path(tmp_path / "model") as tmp:
            tmp.mkdir()
            (tmp / "weights").write_text(text)
    assert (tmp_path / "model" / "weights").read_text() == "second" and len(list(tmp_path.iterdir())) == 1

"""rlhfkit.io: the one JSON-safe conversion and the one figure writer (atomic, closes the figure)."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from rlhfkit.io import json_safe, pyplot, save_figure, write_json


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

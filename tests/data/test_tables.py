"""rlhfkit.data.tables: a malformed row past the first rows that the checks read is still a one-line DataError."""

from __future__ import annotations

import json

import pytest

from rlhfkit.core.errors import DataError
from rlhfkit.data.checks import PEEK_ROWS, data_problems
from rlhfkit.data.tables import load_table


def test_a_bad_row_past_the_checked_ones_is_a_one_line_error(tmp_path):
    path = tmp_path / "sft.jsonl"
    good = [json.dumps({"prompt": f"q{i}", "completion": "a"}) for i in range(PEEK_ROWS + 2)]
    path.write_text("\n".join([*good, '{"prompt": "broken", ']) + "\n")
    assert data_problems(str(path), "data.sft", (("prompt", "completion"),), "SFT") == []  # the first rows are fine
    with pytest.raises(DataError, match=r"sft\.jsonl: cannot be read as json \(.*\); fix or remove the bad rows") as e:
        load_table(str(path))
    assert len(e.value.problems) == 1

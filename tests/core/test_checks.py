"""Output paths checked before anything is written."""

import os

import pytest

from rlhfkit.core.checks import output_file_problems


def test_an_output_file_may_exist_but_not_be_a_folder_or_inside_a_file(tmp_path):
    existing = tmp_path / "out.jsonl"
    existing.write_text("{}\n")
    assert output_file_problems(existing) == [] and output_file_problems(tmp_path / "new" / "out.jsonl") == []
    assert output_file_problems(tmp_path, "--out") == [
        f"--out {str(tmp_path)!r} is a folder; give a file name (rlhfkit will not replace a folder)"
    ]
    assert "is a file, so the file cannot be created" in output_file_problems(existing / "x.jsonl", "--out")[0]


@pytest.mark.skipif(os.geteuid() == 0, reason="root may write a read-only file")
def test_a_read_only_output_file_is_refused(tmp_path):
    existing = tmp_path / "out.jsonl"
    existing.write_text("{}\n")
    existing.chmod(0o444)
    assert output_file_problems(existing, "--out") == [
        f"--out {str(existing)!r} is not writable; choose another file or fix its permissions"
    ]

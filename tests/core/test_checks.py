"""Output paths checked before anything is written."""

from rlhfkit.core.checks import folder_problems, output_file_problems


def test_an_existing_output_file_can_be_replaced_but_a_folder_cannot(tmp_path):
    out = tmp_path / "pairs.jsonl"
    assert output_file_problems(out) == []
    out.write_text("old\n")
    assert output_file_problems(out) == []  # replaced atomically, as --out promises
    assert "is a folder" in output_file_problems(tmp_path)[0]
    assert "is a file" in output_file_problems(out / "x.jsonl")[0]
    assert "is a file" in folder_problems(out)[0]

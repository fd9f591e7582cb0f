"""Preference data: every common format read to ``(prompt, chosen, rejected)`` pairs, labeler agreement, tables.

* :mod:`rlhfkit.data.preferences` -- formats (HH transcripts, columns, K-wise rankings, scores, per-labeler votes)
  -> :class:`PreferenceData`; :func:`load_preferences` detects the format;
* :mod:`rlhfkit.data.agreement` -- Fleiss' kappa, Krippendorff's alpha, per-labeler agreement, filtering;
* :mod:`rlhfkit.data.tables` -- tables, prompts and the lab's preference data for the stages and recipes.
"""

from rlhfkit.data.preferences import (
    FORMATS,
    DataReport,
    PreferenceData,
    detect_format,
    from_columns,
    from_hh,
    from_rankings,
    from_scores,
    from_votes,
    load_preferences,
    parse_transcript,
    read_rows,
    read_votes,
    write_pairs,
)

__all__ = [
    "FORMATS",
    "DataReport",
    "PreferenceData",
    "detect_format",
    "from_columns",
    "from_hh",
    "from_rankings",
    "from_scores",
    "from_votes",
    "load_preferences",
    "parse_transcript",
    "read_rows",
    "read_votes",
    "write_pairs",
]

"""Preference data: every common format read to ``(prompt, chosen, rejected)`` pairs, labeler agreement, tables.

* :mod:`rlhfkit.data.rows` -- sources (files, datasets, lists), the conversion report, text values, bad rows;
* :mod:`rlhfkit.data.preferences` -- formats (HH transcripts, columns, K-wise rankings, scores) -> pairs;
  :func:`load_preferences` detects the format;
* :mod:`rlhfkit.data.votes` -- per-labeler votes (a list column or one column per labeler, label maps, ties) ->
  agreement statistics and majority pairs;
* :mod:`rlhfkit.data.agreement` -- Fleiss' kappa, Krippendorff's alpha, Cohen's kappa per pair of labelers,
  per-labeler agreement and tie rate, the pair filter;
* :mod:`rlhfkit.data.tables` -- tables, prompts and the lab's preference data for the stages and recipes.
"""

from rlhfkit.data.preferences import (
    FORMATS,
    detect_format,
    from_columns,
    from_hh,
    from_rankings,
    from_scores,
    load_preferences,
    parse_transcript,
)
from rlhfkit.data.rows import DataReport, PreferenceData, read_rows, write_pairs
from rlhfkit.data.votes import agreement_summary, from_votes, parse_labels, read_votes

__all__ = [
    "FORMATS",
    "DataReport",
    "PreferenceData",
    "agreement_summary",
    "detect_format",
    "from_columns",
    "from_hh",
    "from_rankings",
    "from_scores",
    "from_votes",
    "load_preferences",
    "parse_labels",
    "parse_transcript",
    "read_rows",
    "read_votes",
    "write_pairs",
]

"""Labeler agreement: per-item majority, dataset reliability (Fleiss' kappa, Krippendorff's alpha), per-labeler
reliability, and filtering of low-agreement comparisons.

Human preference labels are noisy: inter-annotator agreement on RLHF comparisons is typically 63-77%. When several
labelers rate each comparison, the votes tell which items are contested and which labelers are unreliable, and
dropping both makes the reward model's training labels cleaner.

Input: a vote matrix ``votes`` of shape ``(n_items, n_labelers)``, integer (int8 is enough), with

* ``1``  -- the labeler preferred ``response_a``,
* ``0``  -- the labeler preferred ``response_b``,
* ``-1`` -- the labeler did not rate this item,

exactly what :meth:`rlhfkit.lab.LabelerPool.vote` returns. Everything is vectorised with numpy over the whole
matrix: analysing and filtering 1,000,000 items x 5 labelers takes well under ten seconds on one CPU core
(``bench/agreement.py`` measures it).

Definitions (per item ``i``, with ``n_a`` votes for a and ``n_b`` for b, ``n = n_a + n_b``):

* majority label: 1 if ``n_a > n_b``, 0 if ``n_b > n_a``, -1 for a tie (including ``n = 0``);
* agreement: ``max(n_a, n_b) / n``, the share of votes that side with the majority (NaN when ``n = 0``);
* unanimous: ``n >= 2`` and every vote is the same (one vote is not evidence of agreement);
* per labeler ``j``: the share of ``j``'s votes that match the *leave-one-out majority*, the majority of the
  other labelers on the same item; items where the others tie (or nobody else voted) are excluded.
  A labeler is flagged as unreliable when that share is below ``labeler_threshold`` (default 0.6: a labeler
  who agrees with everyone else barely more often than a coin flip adds noise rather than signal) and it was
  measured on at least :data:`MIN_COMPARED` items.

Reliability coefficients (chance-corrected; 1 = perfect, 0 = chance):

* Fleiss' kappa (Fleiss 1971) needs the same number of ratings on every item; otherwise it is reported as
  ``None`` with the reason.
* Krippendorff's alpha (nominal) allows missing votes; computed by the ``krippendorff`` package.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

from rlhfkit.errors import DataError

MIN_COMPARED = 20  # a labeler needs at least this many comparable items before it can be flagged
_EPS = 1e-9  # agreement thresholds are compared with this slack: 3/5 >= 0.6 must hold


def check_votes(votes: np.ndarray) -> np.ndarray:
    """Return ``votes`` as a 2-D int8 array; raise DataError unless every entry is -1, 0 or 1."""
    votes = np.asarray(votes)
    if votes.ndim != 2:
        raise DataError(f"votes has shape {votes.shape}; expected (n_items, n_labelers), one column per labeler")
    if votes.size and not np.issubdtype(votes.dtype, np.integer):
        raise DataError(f"votes has dtype {votes.dtype}; expected integers 1 (a), 0 (b), -1 (not rated)")
    if votes.dtype != np.int8:
        votes = votes.astype(np.int8)
    if votes.size and (votes.min() < -1 or votes.max() > 1):
        raise DataError("votes contains values other than 1 (a preferred), 0 (b preferred) and -1 (not rated)")
    return votes


# ----------------------------------------------------------------------------- per item
@dataclass(frozen=True)
class ItemStats:
    """Per-item statistics, each an array of length ``n_items``.

    label (int8): majority label, 1 = a, 0 = b, -1 = tie or no vote.
    agreement (float64): share of votes with the majority, NaN without votes.
    n_votes (int16): number of votes cast.
    unanimous (bool): at least two votes, all the same.
    tie (bool): no majority (equal votes, or no vote).
    """

    label: np.ndarray
    agreement: np.ndarray
    n_votes: np.ndarray
    unanimous: np.ndarray
    tie: np.ndarray


def vote_counts(votes: np.ndarray) -> np.ndarray:
    """Counts per item and category, shape ``(n_items, 2)``: column 0 = votes for b, column 1 = votes for a."""
    votes = check_votes(votes)
    return np.stack([(votes == 0).sum(axis=1, dtype=np.int16), (votes == 1).sum(axis=1, dtype=np.int16)], axis=1)


def item_stats(votes: np.ndarray) -> ItemStats:
    """Majority label, agreement rate, vote count, unanimity and tie of every item."""
    counts = vote_counts(votes)
    n_b, n_a = counts[:, 0], counts[:, 1]
    n = n_a + n_b
    tie = n_a == n_b
    label = (n_a > n_b).astype(np.int8)
    label[tie] = -1
    with np.errstate(invalid="ignore", divide="ignore"):
        agreement = np.maximum(n_a, n_b) / n.astype(np.float64)
    unanimous = (n >= 2) & ((n_a == 0) | (n_b == 0))
    return ItemStats(label=label, agreement=agreement, n_votes=n, unanimous=unanimous, tie=tie)


# ----------------------------------------------------------------------------- reliability coefficients
def fleiss_kappa(counts: np.ndarray) -> float:
    """Fleiss' kappa of a count table ``(n_items, n_categories)``: ``counts[i, k]`` raters put item i in category k.

    Every item must have the same number ``n >= 2`` of ratings (Fleiss 1971); raises DataError otherwise, or when
    all ratings fall in one category (chance agreement is 1 and kappa is undefined).
    """
    counts = np.asarray(counts, dtype=np.float64)
    if counts.ndim != 2 or counts.shape[0] == 0:
        raise DataError(f"counts has shape {counts.shape}; expected (n_items, n_categories) with n_items >= 1")
    n_per_item = counts.sum(axis=1)
    n = n_per_item[0]
    if not np.all(n_per_item == n):
        raise DataError(
            f"items have between {int(n_per_item.min())} and {int(n_per_item.max())} ratings; Fleiss' kappa needs "
            "the same number on every item (use Krippendorff's alpha instead)"
        )
    if n < 2:
        raise DataError(f"every item has {int(n)} rating(s); Fleiss' kappa needs at least 2 per item")
    p_cat = counts.sum(axis=0) / counts.sum()  # share of all ratings in each category
    p_item = ((counts * counts).sum(axis=1) - n) / (n * (n - 1))  # agreeing rater pairs per item
    p_bar, p_e = p_item.mean(), float((p_cat * p_cat).sum())
    if p_e >= 1.0:
        raise DataError("every rating is in the same category; Fleiss' kappa is undefined (chance agreement = 1)")
    return float((p_bar - p_e) / (1.0 - p_e))


def krippendorff_alpha(votes: np.ndarray, missing: int = -1) -> float:
    """Krippendorff's alpha (nominal) of a rating matrix ``(n_items, n_raters)`` with missing ratings.

    Ratings are category codes ``0..V-1`` (here 0 = b, 1 = a); ``missing`` marks an item a rater did not rate.
    Computed by the ``krippendorff`` package from per-item value counts (vectorised). Raises DataError when
    alpha is undefined: fewer than two categories used, or no item rated twice.
    """
    import krippendorff

    votes = np.asarray(votes)
    rated = votes != missing
    if not rated.any():
        raise DataError("no ratings at all; Krippendorff's alpha is undefined")
    codes = votes[rated].astype(np.int64)
    if codes.min() < 0:
        raise DataError(f"ratings must be category codes >= 0 (or {missing} for missing)")
    n_values = max(int(codes.max()) + 1, 2)
    rows = np.nonzero(rated)[0]
    flat = np.bincount(rows * n_values + codes, minlength=votes.shape[0] * n_values)
    value_counts = flat.reshape(votes.shape[0], n_values)  # value_counts[i, v]: raters who put item i in v
    pairable = value_counts.sum(axis=1) >= 2
    used = value_counts[pairable].sum(axis=0) > 0
    if not pairable.any() or used.sum() < 2:
        raise DataError("Krippendorff's alpha is undefined: it needs two categories and an item rated at least twice")
    return float(krippendorff.alpha(value_counts=value_counts[pairable], level_of_measurement="nominal"))


# ----------------------------------------------------------------------------- per labeler
@dataclass(frozen=True)
class LabelerStats:
    """Per-labeler reliability, arrays of length ``n_labelers``.

    agreement (float64): share of the labeler's votes equal to the leave-one-out majority (NaN if none compared).
    n_rated (int64): items the labeler rated.
    n_compared (int64): rated items where the other labelers had a majority.
    flagged (bool): agreement < threshold on at least MIN_COMPARED compared items.
    threshold (float): the flagging threshold used.
    """

    agreement: np.ndarray
    n_rated: np.ndarray
    n_compared: np.ndarray
    flagged: np.ndarray
    threshold: float


def labeler_agreement(votes: np.ndarray, threshold: float = 0.6) -> LabelerStats:
    """Agreement of each labeler with the majority of the *other* labelers on the same items."""
    votes = check_votes(votes)
    is_a, is_b = votes == 1, votes == 0
    others_a = is_a.sum(axis=1, dtype=np.int16)[:, None] - is_a  # votes for a by the other labelers
    others_b = is_b.sum(axis=1, dtype=np.int16)[:, None] - is_b
    compared = (votes >= 0) & (others_a != others_b)
    agrees = compared & ((others_a > others_b) == is_a)
    n_compared = compared.sum(axis=0, dtype=np.int64)
    with np.errstate(invalid="ignore", divide="ignore"):
        agreement = agrees.sum(axis=0, dtype=np.int64) / n_compared
    flagged = (n_compared >= MIN_COMPARED) & (agreement < threshold)
    return LabelerStats(
        agreement=agreement,
        n_rated=(votes >= 0).sum(axis=0, dtype=np.int64),
        n_compared=n_compared,
        flagged=flagged,
        threshold=threshold,
    )


# ----------------------------------------------------------------------------- dataset report
@dataclass
class AgreementReport:
    """Dataset-level agreement statistics (see :func:`analyze`)."""

    n_items: int
    n_labelers: int
    n_votes: int
    mean_agreement: float  # over items with at least one vote
    share_unanimous: float
    share_ties: float  # includes items nobody rated
    share_below: float  # items with agreement < threshold (ties and unrated items included)
    threshold: float
    fleiss_kappa: float | None
    fleiss_kappa_note: str  # why kappa is None, else ""
    krippendorff_alpha: float | None
    krippendorff_alpha_note: str
    labelers: LabelerStats

    def to_dict(self) -> dict:
        out = {k: v for k, v in asdict(self).items() if k != "labelers"}
        out["labelers"] = [
            {
                "labeler": j,
                "agreement": _float(self.labelers.agreement[j]),
                "n_rated": int(self.labelers.n_rated[j]),
                "n_compared": int(self.labelers.n_compared[j]),
                "flagged": bool(self.labelers.flagged[j]),
            }
            for j in range(self.n_labelers)
        ]
        return out


def _float(x: float) -> float | None:
    return None if np.isnan(x) else float(x)


def analyze(
    votes: np.ndarray, threshold: float = 0.6, labeler_threshold: float = 0.6, stats: ItemStats | None = None
) -> AgreementReport:
    """Dataset and per-labeler agreement statistics of a vote matrix (``stats``: precomputed :func:`item_stats`)."""
    votes = check_votes(votes)
    stats = item_stats(votes) if stats is None else stats
    n_items = votes.shape[0]
    rated = stats.n_votes > 0
    kappa, kappa_note = None, ""
    try:
        kappa = fleiss_kappa(vote_counts(votes))
    except DataError as e:
        kappa_note = str(e)
    alpha, alpha_note = None, ""
    try:
        alpha = krippendorff_alpha(votes)
    except DataError as e:
        alpha_note = str(e)
    below = ~(stats.agreement >= threshold - _EPS) | stats.tie  # NaN (unrated) counts as below
    return AgreementReport(
        n_items=n_items,
        n_labelers=votes.shape[1],
        n_votes=int(stats.n_votes.sum(dtype=np.int64)),
        mean_agreement=float(stats.agreement[rated].mean()) if rated.any() else float("nan"),
        share_unanimous=float(stats.unanimous.mean()) if n_items else float("nan"),
        share_ties=float(stats.tie.mean()) if n_items else float("nan"),
        share_below=float(below.mean()) if n_items else float("nan"),
        threshold=threshold,
        fleiss_kappa=kappa,
        fleiss_kappa_note=kappa_note,
        krippendorff_alpha=alpha,
        krippendorff_alpha_note=alpha_note,
        labelers=labeler_agreement(votes, labeler_threshold),
    )


# ----------------------------------------------------------------------------- filtering
@dataclass
class FilterResult:
    """What :func:`filter_votes` kept.

    keep (bool, n_items): items to keep. stats: per-item statistics after dropping unreliable labelers' votes
    (the label and agreement of kept items come from here). report: analysis of the votes as given.
    dropped_labelers: labelers whose votes were removed. dropped: items dropped, by reason.
    """

    keep: np.ndarray
    stats: ItemStats
    report: AgreementReport
    dropped_labelers: list[int]
    dropped: dict[str, int]

    @property
    def n_kept(self) -> int:
        return int(self.keep.sum())


def filter_votes(
    votes: np.ndarray,
    min_agreement: float = 0.6,
    drop_unreliable: bool = False,
    labeler_threshold: float = 0.6,
) -> FilterResult:
    """Keep the items with a majority whose agreement is at least ``min_agreement``.

    With ``drop_unreliable``, the votes of labelers flagged by :func:`labeler_agreement` are removed first and the
    per-item statistics recomputed without them. Ties (and items left without votes) are always dropped: they have
    no majority to turn into a chosen/rejected pair.
    """
    if not 0.0 <= min_agreement <= 1.0:
        raise DataError(f"min_agreement={min_agreement} must be in [0, 1] (share of votes with the majority)")
    votes = check_votes(votes)
    stats = item_stats(votes)
    report = analyze(votes, threshold=min_agreement, labeler_threshold=labeler_threshold, stats=stats)
    dropped_labelers = np.flatnonzero(report.labelers.flagged).tolist() if drop_unreliable else []
    if dropped_labelers:
        votes = votes.copy()
        votes[:, dropped_labelers] = -1
        stats = item_stats(votes)
    unrated = stats.n_votes == 0
    tie = stats.tie & ~unrated
    below = ~stats.tie & (stats.agreement < min_agreement - _EPS)
    keep = ~(stats.tie | below)
    dropped = {"no votes": int(unrated.sum()), "tie": int(tie.sum()), "below min_agreement": int(below.sum())}
    return FilterResult(keep=keep, stats=stats, report=report, dropped_labelers=dropped_labelers, dropped=dropped)

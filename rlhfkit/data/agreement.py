"""Labeler agreement: per-item majority, dataset reliability (Fleiss' kappa, Krippendorff's alpha, Cohen's kappa of
every pair of labelers), per-labeler reliability, and the filter that decides which comparisons become pairs.

Human preference labels are noisy: inter-annotator agreement on RLHF comparisons is typically 63-77%. When several
labelers rate each comparison, the votes tell which items are contested and which labelers are unreliable, and
dropping both makes the reward model's training labels cleaner.

Input: a vote matrix ``votes`` of shape ``(n_items, n_labelers)``, integer (int8 is enough), with

* ``1`` (:data:`A`) -- the labeler preferred ``response_a``,
* ``0`` (:data:`B`) -- the labeler preferred ``response_b``,
* ``2`` (:data:`TIE`) -- the labeler judged them equal (a real judgment, one of the three categories),
* ``-1`` (:data:`MISSING`) -- the labeler did not rate this item,

(:meth:`rlhfkit.lab.LabelerPool.vote` returns 1 / 0 / -1; :mod:`rlhfkit.data.votes` reads any label map into this
coding). Everything is vectorised with numpy over the whole matrix: analysing and filtering 1,000,000 items x 5
labelers takes seconds (``bench/agreement.py``: 6-9 s on this project's shared, loaded 2-core machine, importing
scikit-learn included).

Definitions (per item, with ``n_a``, ``n_b``, ``n_tie`` votes and ``n`` = their sum):

* majority label: the category with the most votes (:data:`A`, :data:`B` or :data:`TIE`), -1 when two categories
  share the most votes or nobody voted;
* agreement: the majority category's share of the votes, ``max(n_a, n_b, n_tie) / n`` (NaN when ``n = 0``);
* unanimous: ``n >= 2`` and every vote is in the same category (one vote is not evidence of agreement);
* per labeler ``j``: the share of ``j``'s votes that match the *leave-one-out majority*, the majority category of
  the other labelers on the same item; items where the others have no majority (or nobody else voted) are
  excluded. A labeler is flagged as unreliable when that share is below ``labeler_threshold`` (default 0.6: a
  labeler who agrees with everyone else barely more often than a coin flip adds noise rather than signal) and it
  was measured on at least :data:`MIN_COMPARED` items, or when more than ``max_tie_rate`` of its votes (on at
  least :data:`MIN_COMPARED` items) are ties (a labeler who ties everything tells nothing either).

Reliability coefficients (chance-corrected over the three categories; 1 = perfect, 0 = chance), each over every
item that has votes:

* Fleiss' kappa (Fleiss 1971; ``statsmodels``) needs the same number of ratings on every item; otherwise it is
  reported as ``None`` with the reason.
* Krippendorff's alpha (nominal; the ``krippendorff`` package) allows any pattern of missing votes.
* Cohen's kappa (``scikit-learn``) for every pair of labelers, on the items both rated.

Which items become training pairs is a separate filter (:func:`filter_votes`): a tie item never becomes a pair.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field, fields
from itertools import combinations

import numpy as np

from rlhfkit.core.errors import DataError

A, B, TIE, MISSING = 1, 0, 2, -1
CATEGORIES = (B, A, TIE)  # column order of vote_counts: counts[:, B], counts[:, A], counts[:, TIE]
TIES = ("drop", "margin")  # what filter_votes does with ties (see there)
MIN_COMPARED = 20  # a labeler needs at least this many comparable items before it can be flagged
_EPS = 1e-9  # agreement thresholds are compared with this slack: 3/5 >= 0.6 must hold


def check_votes(votes: np.ndarray) -> np.ndarray:
    """Return ``votes`` as a 2-D int8 array; raise DataError unless every entry is -1, 0, 1 or 2."""
    votes = np.asarray(votes)
    if votes.ndim != 2:
        raise DataError(f"votes has shape {votes.shape}; expected (n_items, n_labelers), one column per labeler")
    if votes.size and not np.issubdtype(votes.dtype, np.integer):
        raise DataError(f"votes has dtype {votes.dtype}; expected integers 1 (a), 0 (b), 2 (tie), -1 (not rated)")
    if votes.dtype != np.int8:
        votes = votes.astype(np.int8)
    if votes.size and (votes.min() < MISSING or votes.max() > TIE):
        raise DataError(
            "votes contains values other than 1 (a preferred), 0 (b preferred), 2 (tie) and -1 (not rated)"
        )
    return votes


# ----------------------------------------------------------------------------- per item
@dataclass(frozen=True)
class ItemStats:
    """Per-item statistics, each an array of length ``n_items``.

    label (int8): majority category, 1 = a, 0 = b, 2 = tie, -1 = no single majority or no vote.
    agreement (float64): share of votes in the majority category, NaN without votes.
    n_votes (int16): number of votes cast.
    unanimous (bool): at least two votes, all in the same category.
    tie (bool): no a-or-b majority: the majority is a tie, or no single majority, or no vote.
    counts (int16, ``(n_items, 3)``): votes per category (:func:`vote_counts`).
    """

    label: np.ndarray
    agreement: np.ndarray
    n_votes: np.ndarray
    unanimous: np.ndarray
    tie: np.ndarray
    counts: np.ndarray


def vote_counts(votes: np.ndarray) -> np.ndarray:
    """Votes per item and category, shape ``(n_items, 3)``: column 0 = b, column 1 = a, column 2 = tie."""
    votes = check_votes(votes)
    return np.stack([(votes == c).sum(axis=1, dtype=np.int16) for c in CATEGORIES], axis=1)


def _majority(counts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(label, top)`` over the last axis of ``counts``: the category with the most votes (-1 when two share the
    most, or there are none) and its count."""
    top = counts.max(axis=-1)
    single = ((counts == top[..., None]).sum(axis=-1) == 1) & (top > 0)
    label = np.where(single, counts.argmax(axis=-1), -1).astype(np.int8)
    return label, top


def item_stats(votes: np.ndarray) -> ItemStats:
    """Majority label, agreement rate, vote count, unanimity and tie of every item."""
    counts = vote_counts(votes)
    n = counts.sum(axis=1, dtype=np.int16)
    label, top = _majority(counts)
    with np.errstate(invalid="ignore", divide="ignore"):
        agreement = top / n.astype(np.float64)
    unanimous = (n >= 2) & (top == n)
    tie = (label != A) & (label != B)
    return ItemStats(label=label, agreement=agreement, n_votes=n, unanimous=unanimous, tie=tie, counts=counts)


# ----------------------------------------------------------------------------- reliability coefficients
def fleiss_kappa(counts: np.ndarray) -> float:
    """Fleiss' kappa of a count table ``(n_items, n_categories)``: ``counts[i, k]`` raters put item i in category k.

    Computed by ``statsmodels`` after checking what it assumes: every item has the same number ``n >= 2`` of ratings
    (Fleiss 1971) and the ratings use more than one category (else chance agreement is 1 and kappa is undefined);
    raises DataError otherwise.
    """
    from statsmodels.stats.inter_rater import fleiss_kappa as statsmodels_fleiss_kappa

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
    if (counts.sum(axis=0) > 0).sum() < 2:
        raise DataError("every rating is in the same category; Fleiss' kappa is undefined (chance agreement = 1)")
    return float(statsmodels_fleiss_kappa(counts, method="fleiss"))


def krippendorff_alpha(votes: np.ndarray, missing: int = MISSING) -> float:
    """Krippendorff's alpha (nominal) of a rating matrix ``(n_items, n_raters)`` with missing ratings.

    Ratings are category codes ``0..V-1`` (here 0 = b, 1 = a, 2 = tie); ``missing`` marks an item a rater did not
    rate. Computed by the ``krippendorff`` package from per-item value counts (vectorised). Raises DataError when
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


def pair_key(first: str, second: str) -> str:
    """The key of a pair of labelers in :attr:`AgreementReport.cohen_kappa`: ``"<first>,<second>"``."""
    return f"{first},{second}"


def cohen_kappas(votes: np.ndarray, names: list[str]) -> tuple[dict[str, float | None], dict[str, int]]:
    """Cohen's kappa of every pair of labelers on the items both rated (``scikit-learn``'s ``cohen_kappa_score``).

    Returns ``(kappa, n_shared)``, both keyed by :func:`pair_key` of the labelers' names in column order. Kappa is
    None where it is undefined: fewer than two shared items, or both labelers put every shared item in the same
    single category.
    """
    from sklearn.metrics import cohen_kappa_score

    votes = check_votes(votes)
    rated = votes != MISSING
    kappa: dict[str, float | None] = {}
    shared: dict[str, int] = {}
    for j, k in combinations(range(votes.shape[1]), 2):
        both = rated[:, j] & rated[:, k]
        key = pair_key(names[j], names[k])
        shared[key] = int(both.sum())
        value = float("nan")
        if shared[key] >= 2:
            # scikit-learn on the 9 (vote j, vote k) combinations weighted by their counts: the same confusion
            # matrix as the raw votes give, without passing a million labels per pair
            combos = np.bincount(votes[both, j].astype(np.int64) * 3 + votes[both, k], minlength=9)
            seen = np.flatnonzero(combos)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # undefined kappa is None here, not a warning
                value = cohen_kappa_score(seen // 3, seen % 3, sample_weight=combos[seen], replace_undefined_by=np.nan)
        kappa[key] = None if np.isnan(value) else float(value)
    return kappa, shared


# ----------------------------------------------------------------------------- per labeler
@dataclass(frozen=True)
class LabelerStats:
    """Per-labeler reliability, arrays of length ``n_labelers``.

    agreement (float64): share of the labeler's votes equal to the leave-one-out majority (NaN if none compared).
    n_rated (int64): items the labeler rated.
    n_compared (int64): rated items where the other labelers had a single majority category.
    tie_rate (float64): share of the labeler's votes that are ties (NaN if it rated nothing).
    low_agreement (bool): agreement < threshold on at least MIN_COMPARED compared items.
    many_ties (bool): tie_rate > max_tie_rate on at least MIN_COMPARED rated items.
    flagged (bool): low_agreement or many_ties.
    threshold, max_tie_rate (float): the flagging thresholds used.
    """

    agreement: np.ndarray
    n_rated: np.ndarray
    n_compared: np.ndarray
    tie_rate: np.ndarray
    low_agreement: np.ndarray
    many_ties: np.ndarray
    flagged: np.ndarray
    threshold: float
    max_tie_rate: float


def labeler_agreement(votes: np.ndarray, threshold: float = 0.6, max_tie_rate: float = 0.5) -> LabelerStats:
    """Agreement of each labeler with the majority of the *other* labelers on the same items, and its tie rate."""
    votes = check_votes(votes)
    counts = vote_counts(votes)
    # votes per category by the other labelers, one (items, labelers) array per category (CATEGORIES = 0, 1, 2)
    others_b, others_a, others_tie = (counts[:, c][:, None] - (votes == c) for c in CATEGORIES)
    top = np.maximum(np.maximum(others_b, others_a), others_tie)
    n_top = (others_b == top).astype(np.int8) + (others_a == top) + (others_tie == top)
    majority = np.where(others_a == top, A, np.where(others_b == top, B, TIE))  # meaningful where n_top == 1
    compared = (votes != MISSING) & (n_top == 1) & (top > 0)
    agrees = compared & (majority == votes)
    n_compared = compared.sum(axis=0, dtype=np.int64)
    n_rated = (votes != MISSING).sum(axis=0, dtype=np.int64)
    with np.errstate(invalid="ignore", divide="ignore"):
        agreement = agrees.sum(axis=0, dtype=np.int64) / n_compared
        tie_rate = (votes == TIE).sum(axis=0, dtype=np.int64) / n_rated
    low = (n_compared >= MIN_COMPARED) & (agreement < threshold)
    many_ties = (n_rated >= MIN_COMPARED) & (tie_rate > max_tie_rate)
    return LabelerStats(
        agreement=agreement,
        n_rated=n_rated,
        n_compared=n_compared,
        tie_rate=tie_rate,
        low_agreement=low,
        many_ties=many_ties,
        flagged=low | many_ties,
        threshold=threshold,
        max_tie_rate=max_tie_rate,
    )


# ----------------------------------------------------------------------------- dataset report
@dataclass
class AgreementReport:
    """Dataset-level agreement statistics (see :func:`analyze`), over every item that has votes."""

    n_items: int
    n_labelers: int
    n_votes: int
    n_rated_items: int  # items with at least one vote: the statistics cover these
    mean_agreement: float  # over items with at least one vote
    share_unanimous: float
    share_ties: float  # items without an a-or-b majority (tie majority, no single majority, or no vote)
    share_tie_votes: float  # share of the votes that are ties
    share_below: float  # items with agreement < threshold (ties and unrated items included)
    threshold: float
    fleiss_kappa: float | None
    fleiss_kappa_note: str  # why kappa is None, else ""
    krippendorff_alpha: float | None
    krippendorff_alpha_note: str
    labelers: LabelerStats
    labeler_names: list[str] = field(default_factory=list)
    cohen_kappa: dict[str, float | None] = field(default_factory=dict)  # keyed "<labeler>,<labeler>"
    cohen_kappa_items: dict[str, int] = field(default_factory=dict)  # items both labelers of a pair rated
    # votes files only: per labeler, the share of a-or-b votes for the response shown on the left (None: no such vote)
    left_choice_rate: dict[str, float | None] = field(default_factory=dict)

    def to_dict(self) -> dict:
        """JSON-ready: numbers, None where undefined, one row per labeler."""
        out = {f.name: getattr(self, f.name) for f in fields(self) if f.name not in ("labelers", "left_choice_rate")}
        out = {k: _float(v) if isinstance(v, float) else v for k, v in out.items()}
        lab = self.labelers
        out["labelers"] = [
            {
                "labeler": self.labeler_names[j],
                "agreement": _float(lab.agreement[j]),
                "n_rated": int(lab.n_rated[j]),
                "n_compared": int(lab.n_compared[j]),
                "tie_rate": _float(lab.tie_rate[j]),
                "flagged": bool(lab.flagged[j]),
                "flag_reasons": flag_reasons(lab, j),
                **(
                    {"left_choice_rate": self.left_choice_rate.get(self.labeler_names[j])}
                    if self.left_choice_rate
                    else {}
                ),
            }
            for j in range(self.n_labelers)
        ]
        return out


def flag_reasons(labelers: LabelerStats, j: int) -> list[str]:
    """Why labeler ``j`` is flagged: ``"low agreement"``, ``"ties"``, both or none."""
    return [r for r, on in (("low agreement", labelers.low_agreement[j]), ("ties", labelers.many_ties[j])) if on]


def _float(x: float) -> float | None:
    return None if np.isnan(x) else float(x)


def analyze(
    votes: np.ndarray,
    threshold: float = 0.6,
    labeler_threshold: float = 0.6,
    stats: ItemStats | None = None,
    names: list[str] | None = None,
    max_tie_rate: float = 0.5,
) -> AgreementReport:
    """Dataset and per-labeler agreement statistics of a vote matrix.

    ``stats``: precomputed :func:`item_stats`; ``names``: the labelers' names (default ``"0"``, ``"1"``, ...), which
    key the Cohen's kappa of each pair.
    """
    votes = check_votes(votes)
    stats = item_stats(votes) if stats is None else stats
    n_items, n_labelers = votes.shape
    names = [str(j) for j in range(n_labelers)] if names is None else [str(n) for n in names]
    if len(names) != n_labelers:
        raise DataError(f"{len(names)} labeler names for {n_labelers} labelers (vote columns); give one per labeler")
    rated = stats.n_votes > 0
    kappa, kappa_note = None, ""
    try:
        kappa = fleiss_kappa(stats.counts[rated]) if rated.any() else None
        kappa_note = "" if rated.any() else "no votes"
    except DataError as e:
        kappa_note = str(e)
    alpha, alpha_note = None, ""
    try:
        alpha = krippendorff_alpha(votes)
    except DataError as e:
        alpha_note = str(e)
    cohen, cohen_items = cohen_kappas(votes, names)
    below = ~(stats.agreement >= threshold - _EPS) | stats.tie  # NaN (unrated) counts as below
    n_votes = int(stats.n_votes.sum(dtype=np.int64))
    nan = float("nan")
    return AgreementReport(
        n_items=n_items,
        n_labelers=n_labelers,
        n_votes=n_votes,
        n_rated_items=int(rated.sum()),
        mean_agreement=float(stats.agreement[rated].mean()) if rated.any() else nan,
        share_unanimous=float(stats.unanimous.mean()) if n_items else nan,
        share_ties=float(stats.tie.mean()) if n_items else nan,
        share_tie_votes=float(stats.counts[:, 2].sum() / n_votes) if n_votes else nan,
        share_below=float(below.mean()) if n_items else nan,
        threshold=threshold,
        fleiss_kappa=kappa,
        fleiss_kappa_note=kappa_note,
        krippendorff_alpha=alpha,
        krippendorff_alpha_note=alpha_note,
        labelers=labeler_agreement(votes, labeler_threshold, max_tie_rate),
        labeler_names=names,
        cohen_kappa=cohen,
        cohen_kappa_items=cohen_items,
    )


# ----------------------------------------------------------------------------- filtering
@dataclass
class FilterResult:
    """What :func:`filter_votes` kept.

    keep (bool, n_items): items that become pairs. label (int8, n_items): the preferred side of each item, 1 = a,
    0 = b, -1 = none. agreement (float64): the share of votes for the preferred side (NaN without one). margin
    (float64): ``(votes for the preferred side - votes for the other) / votes``, 0 without a preferred side.
    stats: per-item statistics after dropping unreliable labelers' votes. report: analysis of the votes as given.
    dropped_labelers: labelers (column indices) whose votes were removed. dropped: items dropped, by reason, each
    counted once, in this order: no votes, identical responses, tie, below min_agreement.
    """

    keep: np.ndarray
    label: np.ndarray
    agreement: np.ndarray
    margin: np.ndarray
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
    *,
    ties: str = "drop",
    identical: np.ndarray | None = None,
    names: list[str] | None = None,
    max_tie_rate: float = 0.5,
) -> FilterResult:
    """Decide which items become (chosen, rejected) pairs. The statistics (``report``) cover every item with votes.

    With ``drop_unreliable``, the votes of labelers flagged by :func:`labeler_agreement` are removed first and the
    per-item statistics recomputed without them. Items without votes, and items whose two responses are
    ``identical`` (a boolean mask, when given), never become pairs. Ties:

    * ``"drop"`` (default): an item becomes a pair only when a or b is the majority category (tie votes count as
      votes against it); agreement is the majority's share.
    * ``"margin"``: every item with more votes for one side than the other becomes a pair, however many tie votes it
      has; agreement is that side's share of all votes, and ``margin`` (also given in ``"drop"`` mode) is meant for
      TRL's ``margin`` column, so tie votes lower the required reward gap instead of dropping the item.

    Either way, items whose agreement is below ``min_agreement`` are dropped.
    """
    if not 0.0 <= min_agreement <= 1.0:
        raise DataError(f"min_agreement={min_agreement} must be in [0, 1] (share of votes with the majority)")
    if ties not in TIES:
        raise DataError(f"ties={ties!r}; choose 'drop' (tie items are not pairs) or 'margin' (vote margin as margin)")
    votes = check_votes(votes)
    stats = item_stats(votes)
    report = analyze(votes, min_agreement, labeler_threshold, stats=stats, names=names, max_tie_rate=max_tie_rate)
    dropped_labelers = np.flatnonzero(report.labelers.flagged).tolist() if drop_unreliable else []
    if dropped_labelers:
        votes = votes.copy()
        votes[:, dropped_labelers] = MISSING
        stats = item_stats(votes)
    n_b, n_a = stats.counts[:, 0].astype(np.int64), stats.counts[:, 1].astype(np.int64)
    n = stats.n_votes.astype(np.float64)
    if ties == "drop":
        label = np.where(stats.tie, -1, stats.label).astype(np.int8)
    else:
        label = np.where(n_a == n_b, -1, (n_a > n_b).astype(np.int8)).astype(np.int8)
    with np.errstate(invalid="ignore", divide="ignore"):
        agreement = np.where(label >= 0, np.maximum(n_a, n_b) / n, np.nan)
        margin = np.where(label >= 0, np.abs(n_a - n_b) / n, 0.0)
    unrated = stats.n_votes == 0
    same = np.zeros(len(label), dtype=bool) if identical is None else np.asarray(identical, dtype=bool) & ~unrated
    tie = (label < 0) & ~unrated & ~same
    below = (label >= 0) & ~same & (agreement < min_agreement - _EPS)
    keep = (label >= 0) & ~same & ~below
    dropped = {
        "no votes": int(unrated.sum()),
        "identical responses": int(same.sum()),
        "tie": int(tie.sum()),
        "below min_agreement": int(below.sum()),
    }
    return FilterResult(
        keep=keep,
        label=label,
        agreement=agreement,
        margin=margin,
        stats=stats,
        report=report,
        dropped_labelers=dropped_labelers,
        dropped=dropped,
    )

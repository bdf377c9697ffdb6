"""Folds and splits: seeded multi-label stratified folds, the PTB-XL benchmark's own fold procedure (what
it used for ICBEB2018), and the rules that turn folds into train/validation/test -- the original's seeded
permutation, a database's fixed split (PTB-XL: folds 1-8, 9, 10), or cross-validation fold k."""
from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np
import pandas as pd

from utils.errors import PipelineError

__all__ = ["N_FOLDS", "TRAIN_FOLDS", "VAL_FOLDS", "FOLD_RULES", "stratified_folds", "benchmark_fold_tokens",
           "benchmark_folds", "split_folds", "split_labels", "refuse_empty_parts", "nested_order", "nested_subset"]

FOLD_RULES = ("stratified", "benchmark")  # preprocess.py --folds

N_FOLDS = 10
TRAIN_FOLDS, VAL_FOLDS = 8, 1  # the original split: 8 training folds, 1 validation, the rest (1) test


def stratified_folds(y: np.ndarray, n_folds: int = N_FOLDS, seed: int = 42) -> np.ndarray:
    """Iterative stratification for multi-label data (Sechidis et al., ECML 2011); folds 1..n_folds.

    Rarest labels are placed first, each example into the fold (not yet full) that still wants that
    label most, ties broken by fold size and then by a generator seeded with `seed` -- a pure function
    of (y, n_folds, seed).
    """
    rng = np.random.default_rng(seed)
    y = np.asarray(y, dtype=bool)
    n, n_labels = y.shape
    want_total = np.full(n_folds, n / n_folds)
    want_label = np.tile(y.sum(0) / n_folds, (n_folds, 1))  # (folds, labels)
    fold = np.zeros(n, dtype=np.int64)
    remaining = np.ones(n, dtype=bool)
    order_noise = rng.random(n)

    def place(i: int, scores: np.ndarray) -> None:
        scores[want_total <= 0] = -np.inf  # a full fold takes no more while another still has room
        if np.isinf(scores).all():
            scores = want_total.copy()
        best = np.flatnonzero(scores == scores.max())
        if len(best) > 1:
            sizes = want_total[best]
            best = best[sizes == sizes.max()]
        f = best[rng.integers(len(best))] if len(best) > 1 else best[0]
        fold[i] = f + 1
        remaining[i] = False
        want_total[f] -= 1
        want_label[f] -= y[i]

    while remaining.any():
        counts = y[remaining].sum(0)
        if counts.sum() == 0:
            for i in np.flatnonzero(remaining)[np.argsort(order_noise[remaining])]:
                place(i, want_total.copy())
            break
        label = np.flatnonzero(counts == counts[counts > 0].min())[0]
        members = np.flatnonzero(remaining & y[:, label])
        for i in members[np.argsort(order_noise[members])]:
            place(i, want_label[:, label].copy())
    return fold



def benchmark_fold_tokens(statements: Sequence[Sequence[str]], sex: Sequence[str],
                          age: Sequence[float]) -> list[list[str]]:
    """What the PTB-XL benchmark stratifies each record on (its utils/stratisfy.py, as its ICBEB2018
    conversion calls it): the record's statements, a sex token and an age band (<20, 20-40, 40-60, 60-80,
    >=80; none for an unknown age). The sex tokens are the reference's own: its conversion stores 1 for
    "Male" and 0 otherwise, its stratifier names 0 "male" and anything else "female", so a male record
    carries "female" -- kept, since the tokens' sorted order breaks the procedure's ties."""
    tokens = []
    for codes, s, a in zip(statements, sex, age):
        band = [] if not np.isfinite(a) else ["<20" if a < 20 else "20-40" if a < 40 else "40-60" if a < 60
                                              else "60-80" if a < 80 else ">=80"]
        tokens.append([*codes, "female" if str(s) == "Male" else "male", *band])
    return tokens


def benchmark_folds(tokens: Sequence[Sequence[str]], n_folds: int = N_FOLDS) -> np.ndarray:
    """Folds 1..n_folds of records, one patient each, by the PTB-XL benchmark's procedure (Sechidis et al.'s
    iterative stratification as its stratisfy.py does it; re-implemented here, with the same ties and
    random draws): repeatedly take the token carried by the fewest unplaced records (the first such in
    sorted order), and place each of its records -- in the order of the reference's stable argsort
    reversed, i.e. the last record first -- into the fold that wants that token most; a tie goes to the
    fold that wants records most, a remaining tie to `RandomState(0).choice` (its `np.random.seed(0)`).
    Records are numbered in the given order (the reference numbers them as its directory listing gives
    them). A record with no token is left in fold 0, as there."""
    n = len(tokens)
    classes = sorted({t for ts in tokens for t in ts})
    index = {c: k for k, c in enumerate(classes)}
    carriers = [[] for _ in classes]                     # record indices per token, with multiplicity
    for i, ts in enumerate(tokens):
        for t in ts:
            carriers[index[t]].append(i)
    carriers = [np.asarray(c, dtype=np.int64) for c in carriers]
    left = np.array([len(c) for c in carriers], dtype=np.int64)  # unplaced carriers per token
    share = 1 / n_folds  # the reference's ratio times a count: the same floating-point values, the same ties
    want_total = np.full(n_folds, share * n)
    want = np.array([[share * len(c)] * n_folds for c in carriers]).reshape(len(classes), n_folds)
    fold = np.zeros(n, dtype=np.int64)
    placed = np.zeros(n, dtype=bool)
    rng = np.random.RandomState(0)
    while (~placed).any() and (left > 0).any():
        label = int(np.flatnonzero(left == left[left > 0].min())[0])
        members = carriers[label][~placed[carriers[label]]]
        ids, counts = np.unique(members, return_counts=True)
        for i in ids[np.argsort(counts, kind="stable")[::-1]]:
            best = np.flatnonzero(want[label] == want[label].max())
            if len(best) > 1:
                sizes = want_total[best]
                f = best[rng.choice(np.flatnonzero(sizes == sizes.max()))]
            else:
                f = best[0]
            fold[i], placed[i] = f + 1, True
            want_total[f] -= 1
            for t in tokens[i]:
                want[index[t], f] -= 1
                left[index[t]] -= 1
    return fold


def split_folds(seed: int, test_fold: int | None = None,
                fixed: Mapping[str, Sequence[int]] | None = None) -> tuple[list[int], list[int], list[int]]:
    """Train/validation/test folds, 8/1/1.

    - `test_fold` k (cross-validation): test on fold k, validate on the next fold (k % 10 + 1), train on
      the other eight, so the ten values of k test every record exactly once;
    - else `fixed` (a database's own split, stored in its preprocess manifest): those folds;
    - else exactly the original code's single split, `np.random.RandomState(seed).permutation(range(1, 11))`:
      first 8 folds train, 9th validation, 10th test (seed 42: train 9,2,6,1,8,3,10,5; validation 4; test 7).
    """
    if test_fold is not None:
        if not 1 <= test_fold <= N_FOLDS:
            raise ValueError(f"test fold must be 1..{N_FOLDS}, got {test_fold}")
        val = test_fold % N_FOLDS + 1
        return [f for f in range(1, N_FOLDS + 1) if f not in (test_fold, val)], [val], [test_fold]
    if fixed:
        return [int(f) for f in fixed["train"]], [int(f) for f in fixed["val"]], [int(f) for f in fixed["test"]]
    perm = [int(f) for f in np.random.RandomState(seed).permutation(range(1, N_FOLDS + 1))]
    return perm[:TRAIN_FOLDS], perm[TRAIN_FOLDS:TRAIN_FOLDS + VAL_FOLDS], perm[TRAIN_FOLDS + VAL_FOLDS:]


def split_labels(labels: pd.DataFrame, seed: int, limit: int | None = None, test_fold: int | None = None,
                 fixed: Mapping[str, Sequence[int]] | None = None) -> dict[str, pd.DataFrame]:
    """labels.csv rows of the train/val/test folds (see `split_folds`); `limit` keeps a seeded random
    subset first."""
    if limit and limit < len(labels):
        labels = labels.sample(n=limit, random_state=seed).sort_index()
    train, val, test = split_folds(seed, test_fold, fixed)
    return {name: labels[labels["fold"].isin(folds)].reset_index(drop=True)
            for name, folds in (("train", train), ("val", val), ("test", test))}


def refuse_empty_parts(splits: Mapping[str, pd.DataFrame], where: str, advice: str = "too few records?") -> None:
    """A PipelineError naming the parts of `splits` without a record, and every part's size: nothing can
    be fitted, tuned or scored on an empty one, so it is said before any model is fitted (`where`: the data
    and split; `advice`: what to do about it)."""
    empty = [name for name in ("train", "val", "test") if len(splits[name]) == 0]
    if empty:
        sizes = ", ".join(f"{name} {len(splits[name])}" for name in ("train", "val", "test"))
        parts = f"{' and '.join(empty)} split{'s' if len(empty) > 1 else ''}"
        raise PipelineError(f"no records in the {parts} of {where} ({sizes} records); {advice}")


def nested_order(labels: pd.DataFrame, classes: Sequence[str], seed: int, window: int = 64) -> np.ndarray:
    """Row positions of `labels` in a seeded order whose every prefix is stratified, so that the subsets
    of one seed lie inside each other. Greedily: from the next `window` records of a seeded shuffle, the
    one that brings the prefix's class counts closest to their share of the whole (squared deviations,
    each class weighted by the inverse of its prevalence) comes next. On 200 records with 9 classes no
    prefix of an eighth or more strayed by more than 4 points from any class's prevalence (20 seeds)."""
    y = labels[list(classes)].to_numpy(float)
    perm = np.random.default_rng(seed).permutation(len(y))
    share = y.mean(axis=0) if len(y) else np.zeros(y.shape[1])
    weight = 1.0 / np.maximum(share, 1.0 / max(len(y), 1))
    counts = np.zeros(y.shape[1])
    pending, order = list(perm), []
    for k in range(1, len(y) + 1):
        candidates = np.array(pending[:window])
        deviation = (((counts + y[candidates] - share * k) ** 2) * weight).sum(axis=1)
        best = int(np.argmin(deviation))
        order.append(pending.pop(best))
        counts += y[order[-1]]
    return np.array(order, dtype=int)


def nested_subset(labels: pd.DataFrame, classes: Sequence[str], fraction: float, seed: int) -> pd.DataFrame:
    """The first ceil(fraction x n) records of `nested_order` (at least 2: batch norm needs them), in
    their original order: for one seed, the subset of a smaller fraction lies inside a larger one's."""
    n = min(len(labels), max(2, int(np.ceil(fraction * len(labels) - 1e-9))))
    return labels.iloc[np.sort(nested_order(labels, classes, seed)[:n])].reset_index(drop=True)

"""Clustered standard errors: per-group sums of per-row values, O(groups) memory.

When rows are not independent (the tokens of one document, the images of one
patient), the standard error of a mean must treat each group as one draw
(Miller, "Adding Error Bars to Evals", 2024):

    se = sqrt(G / (G - 1) * sum_g (S_g - mean * W_g)^2) / W,
    S_g = sum_{i in g} w_i x_i,   W_g = sum_{i in g} w_i,   W = sum_g W_g,

G the number of groups with rows counted.  :class:`GroupSums` keeps S_g and
W_g of every group seen (memory O(G x values), never O(N)); a group id is
looked up once per run of equal ids, so rows sorted by group cost one hash
lookup per group.  Per block of rows (the score kernel's blocks, counted
from row 0) each group's rows are summed in float64 in row order, and the
block partials are added to the group's double-double (106-bit) sum: the
same bits for any split of the rows into slices, and exact merges while a
group's sums span less than ~2^53 times their smallest term.
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit, types
from numba.typed import Dict

from fastce._config import KERNEL_OPTIONS, kernel


@njit(inline="always", **KERNEL_OPTIONS)
def _dd_add(hi, lo, g, m, x):
    """(hi, lo)[g, m] += x as a double-double: TwoSum, then renormalised."""
    a = hi[g, m]
    t = a + x
    x_part = t - a
    e = (a - (t - x_part)) + (x - x_part) + lo[g, m]
    s = t + e
    lo[g, m] = e - (s - t)
    hi[g, m] = s


# Slots of fold_groups' cache of group ids, at most (a power of two: the slot is the id's low bits).
_ID_SLOTS = 1 << 16


@kernel(**KERNEL_OPTIONS)
def fold_groups(groups, counted, values, weights, block_rows, block_base, first_block, index, hi, lo, partial,
                last_block, touched):
    """Add the rows of blocks [first_block, ...) of rows [0, len(groups)) into the per-group sums.

    Returns the number of blocks done: all of them, or the block where a new
    group found no room in ``hi`` (its rows then added nothing: the caller
    grows the arrays and calls again from that block).  ``groups`` int64 ids;
    ``counted`` rows to include; ``values`` (rows, M) per-row values;
    ``weights`` row weights or empty.  Column 0 of ``hi``/``lo`` is W_g,
    column 1 + m is S_g of value m.  ``block_base`` numbers this call's
    first block among all blocks seen (``last_block`` remembers, per group,
    the last block that touched it).
    """
    n_rows = groups.shape[0]
    n_values = values.shape[1]
    weighted = weights.shape[0] != 0
    capacity = hi.shape[0]
    n_groups = len(index)
    prev_id = np.int64(0)
    prev_g = np.int64(-1)
    # A direct-mapped cache of ids seen (slot: the id's low bits) in front of the typed dict, whose lookup (a hash
    # and a key comparison through a function call) was 11% of evaluate(groups=) at C = 100 with 5 groups.
    # Slots: the rows' count rounded up to a power of two, within [64, _ID_SLOTS] (small calls allocate little).
    slots = np.uint64(64)
    while slots < n_rows and slots < _ID_SLOTS:
        slots *= np.uint64(2)
    cached_ids = np.empty(slots, dtype=np.int64)
    cached_groups = np.full(slots, -1, dtype=np.int64)
    nblocks = (n_rows + block_rows - 1) // block_rows
    for b in range(first_block, nblocks):
        block = block_base + b
        n_touched = 0
        full = False
        for r in range(b * block_rows, min(n_rows, (b + 1) * block_rows)):
            if not counted[r]:
                continue
            w = np.float64(weights[r]) if weighted else 1.0
            if w == 0.0:
                continue  # a row of weight 0 is not part of any weighted mean
            gid = groups[r]
            if prev_g < 0 or gid != prev_id:
                slot = np.uint64(gid) & (slots - np.uint64(1))
                if cached_groups[slot] >= 0 and cached_ids[slot] == gid:
                    prev_g = cached_groups[slot]
                else:
                    if gid in index:
                        prev_g = index[gid]
                    elif n_groups == capacity:
                        full = True
                        break
                    else:
                        prev_g = np.int64(n_groups)
                        index[gid] = prev_g
                        n_groups += 1
                    cached_ids[slot] = gid
                    cached_groups[slot] = prev_g
                prev_id = gid
            g = prev_g
            if last_block[g] != block:
                last_block[g] = block
                touched[n_touched] = g
                n_touched += 1
                for m in range(n_values + 1):
                    partial[g, m] = 0.0
            partial[g, 0] += w
            for m in range(n_values):
                partial[g, 1 + m] += w * values[r, m]
        if full:
            # The block's partials are not added: forget them, so that the next call redoes the block.
            for t in range(n_touched):
                last_block[touched[t]] = -1
            return b
        for t in range(n_touched):
            g = touched[t]
            for m in range(n_values + 1):
                _dd_add(hi, lo, g, m, partial[g, m])
    return nblocks


class GroupSums:
    """W_g and S_g (double-double) of ``n_values`` per-row values for every group seen."""

    def __init__(self, n_values: int):
        self.n_values = int(n_values)
        # Made and measured by compiled functions only: from Python, a typed Dict's constructor and len() are
        # numba functions compiled in every process (uncached), 0.22-0.24 s of a first groups= call with a full
        # cache.
        self.index = _index_of(_NO_IDS)
        self.hi = np.zeros((0, self.n_values + 1))
        self.lo = np.zeros((0, self.n_values + 1))
        self._partial = np.zeros((0, self.n_values + 1))
        self._last_block = np.zeros(0, dtype=np.int64)
        self._blocks_seen = 0
        # A merge is lazy (see merge): the settled GroupSums it starts from, the parts to add in order, their
        # groups in all; a GroupSums a merge started from is never changed again (_frozen).
        self._base: GroupSums | None = None
        self._parts: tuple = ()
        self._parts_groups = 0
        self._frozen = False

    def _settle(self) -> None:
        """Carry out the merges held (see merge): the base's groups, then each part's, in order.

        Built in a GroupSums of its own and swapped in at the end: a State handed out shares its group sums,
        and two threads reading it at once each build the same result instead of adding into one another's."""
        parts = self._parts
        if not parts:
            return
        base = self._base
        out = GroupSums(self.n_values)
        g = base.n_groups
        out._set_groups(base.ids(), base.hi[:g], base.lo[:g])
        out._reserve(g + sum(ids.shape[0] for ids, _, _ in parts))
        for ids, hi, lo in parts:
            _merge_groups(out.index, out.hi, out.lo, ids, hi, lo)
        self.index, self.hi, self.lo, self._partial, self._last_block = (
            out.index, out.hi, out.lo, out._partial, out._last_block)
        self._base, self._parts, self._parts_groups = None, (), 0

    @property
    def n_groups(self) -> int:
        """The groups held (settling any merge held first: see merge)."""
        self._settle()
        return _size_of(self.index)

    def __getstate__(self) -> dict:
        # Dask moves partial states between processes by pickling them; numba's
        # typed Dict does not pickle, so the index travels as its ids, in row
        # order, with the groups' sums only (not the capacity reserved for a
        # slice's rows, nor the fold's scratch).
        g = self.n_groups  # (settled)
        return {"n_values": self.n_values, "ids": self.ids(), "hi": self.hi[:g].copy(), "lo": self.lo[:g].copy(),
                "blocks_seen": self._blocks_seen}

    def __setstate__(self, state: dict) -> None:
        self.__init__(state["n_values"])
        self._set_groups(state["ids"], state["hi"], state["lo"])
        self._blocks_seen = state["blocks_seen"]

    def _set_groups(self, ids, hi, lo) -> None:
        """Take these groups (ids in row order, and their sums) in place of any held."""
        g = ids.shape[0]
        self.index = _index_of(np.ascontiguousarray(ids, dtype=np.int64))
        self._reserve(g)
        self.hi[:g], self.lo[:g] = hi, lo

    def _reserve(self, capacity: int) -> None:
        if capacity <= self.hi.shape[0]:
            return
        capacity = max(capacity, 2 * self.hi.shape[0], 64)
        grow = capacity - self.hi.shape[0]
        pad = np.zeros((grow, self.n_values + 1))
        self.hi = np.concatenate([self.hi, pad])
        self.lo = np.concatenate([self.lo, pad])
        self._partial = np.concatenate([self._partial, pad])
        self._last_block = np.concatenate([self._last_block, np.full(grow, -1, dtype=np.int64)])

    def add(self, groups, counted, values, weights, block_rows: int) -> None:
        """Fold one slice of rows that starts on a block boundary (see ``fold_groups``).

        Room grows with the groups seen (doubling), never with the rows: a
        slice of 4M rows reserved room for 4M groups before (384 MB at one
        top-k value, and 0.26 s of copying for 16M rows of binary logits).
        """
        if self._frozen:  # a lazy merge reads it: it must stay as it was
            raise RuntimeError("fastce internal error: rows added to group sums a merge started from")
        self._settle()
        n_rows = groups.shape[0]
        nblocks = -(-n_rows // block_rows)
        args = (np.ascontiguousarray(groups, dtype=np.int64), np.ascontiguousarray(counted, dtype=np.bool_),
                np.ascontiguousarray(values, dtype=np.float64),
                np.empty(0) if weights is None else np.ascontiguousarray(weights, dtype=np.float64),
                int(block_rows), int(self._blocks_seen))
        touched = np.empty(min(n_rows, block_rows), dtype=np.int64)
        done = 0
        while done < nblocks:
            self._reserve(self.n_groups + 1)
            done = fold_groups(*args, done, self.index, self.hi, self.lo, self._partial, self._last_block, touched)
        self._blocks_seen += nblocks

    def add_rows(self, groups, values, weights, block_rows: int) -> None:
        """``add`` of the rows whose first value (the loss) is not NaN: the rows a State counts."""
        self.add(groups, ~np.isnan(values[:, 0]), values, weights, block_rows)

    def ids(self) -> np.ndarray:
        """Group ids in the order of their rows in ``hi`` / ``lo``."""
        g = self.n_groups  # (settled)
        return _ids_of(self.index, g)

    def merge(self, other: "GroupSums") -> "GroupSums":
        """Sums of both (a group seen by both adds its double-doubles); ``self`` and ``other`` unchanged (their sums:
        ``self`` may be settled, and is kept from further ``add`` once a merge starts from it).

        Compiled (_merge_groups): the streaming doors merge the sums of every
        batch into their running ones, so a merge costs O(groups held) in
        compiled code, not in Python (23 us per group, measured, before).
        """
        if other.n_values != self.n_values:
            raise ValueError(f"cannot merge group sums of {self.n_values} and {other.n_values} values")
        # Lazy: ``out`` holds the settled base and the parts to add, and adds them when first read, once the
        # parts hold as many groups as the base (or more), or never.  Copying the running sums at every merge
        # made a stream of batches quadratic in its groups (a new group a row, 100-row batches: 400k rows took
        # 16.7 s, evaluate(groups=) 0.13 s); now each group is copied O(1) times on average.  The same adds in
        # the same order as merging at once: the same bits.
        out = GroupSums(self.n_values)
        base, parts, parts_groups = (self._base, self._parts, self._parts_groups) if self._parts else (self, (), 0)
        base._frozen = True
        h = other.n_groups  # (settled)
        if h:  # a part holds its groups' ids and sums only (trimmed copies), none of the fold's room
            parts = parts + ((other.ids(), other.hi[:h].copy(), other.lo[:h].copy()),)
        out._base, out._parts, out._parts_groups = base, parts, parts_groups + h
        out._blocks_seen = self._blocks_seen + other._blocks_seen
        # Settled once the parts hold as many groups as the base, or many parts: memory stays O(groups held).
        if out._parts_groups >= max(base.n_groups, 1024) or len(parts) >= 64:
            out._settle()
        elif not parts:
            # Nothing to add (rows all ignored or of weight 0): the base's sums, shared (it is frozen), no copy.
            out.index, out.hi, out.lo = base.index, base.hi, base.lo
            out._base, out._frozen = None, True
        return out

    def to_dict(self) -> dict:
        g = self.n_groups  # (settled)
        return {"n_values": self.n_values, "ids": self.ids().tolist(),
                "hi": [_json_number(v) for v in self.hi[:g].ravel().tolist()],
                "lo": [_json_number(v) for v in self.lo[:g].ravel().tolist()]}

    @classmethod
    def from_dict(cls, data) -> "GroupSums":
        """Inverse of :meth:`to_dict`; a ValueError for anything malformed (checked before allocating)."""
        if not isinstance(data, dict):
            raise ValueError("group sums must be a mapping")
        n_values, ids, hi, lo = data["n_values"], data["ids"], data["hi"], data["lo"]
        if isinstance(n_values, bool) or not isinstance(n_values, int) or not 1 <= n_values <= 1 << 16:
            raise ValueError(f"n_values out of range: {n_values!r}")
        if not all(isinstance(x, list) for x in (ids, hi, lo)):
            raise ValueError("ids, hi and lo must be lists")
        if len(hi) != len(ids) * (n_values + 1) or len(lo) != len(hi):
            raise ValueError("group sums have the wrong length")
        if not all(isinstance(i, int) and not isinstance(i, bool) and -(2**63) <= i < 2**63 for i in ids):
            raise ValueError("group ids must be 64-bit integers")
        if len(set(ids)) != len(ids):
            raise ValueError("group ids repeat")
        out = cls(n_values)
        g = len(ids)
        out._set_groups(np.array(ids, dtype=np.int64),
                        np.array([_from_json_number(v) for v in hi], dtype=np.float64).reshape(g, n_values + 1),
                        np.array([_from_json_number(v) for v in lo], dtype=np.float64).reshape(g, n_values + 1))
        return out

    def standard_errors(self, means) -> list[float]:
        """Clustered standard error of each value's weighted mean (``means``, one per value)."""
        return [self.standard_error(m, mean) for m, mean in enumerate(means)]

    def standard_error(self, m: int, mean: float) -> float:
        """Clustered standard error of value ``m``'s weighted mean ``mean`` (NaN below two groups)."""
        g = self.n_groups
        if g < 2 or math.isnan(mean):
            return math.nan
        if math.isinf(mean):
            return math.inf
        # In the order of the group ids: the groups are held in the order first seen, which depends on how states
        # were merged, and a sum over them in that order moved the last bit with the merge order.
        order = np.argsort(self.ids(), kind="stable")
        weight = (self.hi[:g, 0] + self.lo[:g, 0])[order]
        sums = (self.hi[:g, 1 + m] + self.lo[:g, 1 + m])[order]
        # Each group's residual divided by the total weight before it is squared: squares of the residuals
        # themselves underflowed with weights of 1e-200 (an error of 0) and overflowed above ~1e154.
        with np.errstate(invalid="ignore", over="ignore", under="ignore"):
            centred = float(np.sum(((sums - mean * weight) / float(weight.sum())) ** 2))
        return math.sqrt(g / (g - 1) * centred) if math.isfinite(centred) else math.nan


@kernel(**KERNEL_OPTIONS)
def _ids_of(index, n_groups):
    """The ids of a group index, in the order of their rows."""
    ids = np.empty(n_groups, dtype=np.int64)
    for gid, g in index.items():
        ids[g] = gid
    return ids


_NO_IDS = np.empty(0, dtype=np.int64)


@kernel(**KERNEL_OPTIONS)
def _size_of(index):
    """len(index), compiled and cached (see GroupSums.__init__)."""
    return len(index)


@kernel(**KERNEL_OPTIONS)
def _index_of(ids):
    """A group index: id -> its row, for ids in row order."""
    index = Dict.empty(key_type=types.int64, value_type=types.int64)
    for row in range(ids.shape[0]):
        index[ids[row]] = row
    return index


@kernel(**KERNEL_OPTIONS)
def _merge_groups(index, hi, lo, other_ids, other_hi, other_lo):
    """Add the groups of another GroupSums (ids in row order, their sums) into ``index`` / ``hi`` / ``lo``
    (capacity for all of them): a group of both adds its double-doubles (TwoSum, renormalised)."""
    n_groups = len(index)
    for row in range(other_ids.shape[0]):
        gid = other_ids[row]
        if gid in index:
            target = index[gid]
        else:
            target = n_groups
            index[gid] = target
            n_groups += 1
        for m in range(hi.shape[1]):
            a_hi, a_lo, b_hi, b_lo = hi[target, m], lo[target, m], other_hi[row, m], other_lo[row, m]
            s = a_hi + b_hi
            bp = s - a_hi
            err = (a_hi - (s - bp)) + (b_hi - bp) + (a_lo + b_lo)
            total = s + err
            hi[target, m] = total
            lo[target, m] = err - (total - s)


def _json_number(v: float):
    return v if math.isfinite(v) else repr(v)


def _from_json_number(v) -> float:
    if isinstance(v, bool) or not isinstance(v, (int, float, str)):
        raise ValueError(f"expected a number, got {v!r}")
    if isinstance(v, str) and v not in ("inf", "-inf", "nan"):
        raise ValueError(f"expected a number, got {v!r}")
    return float(v)


def check_groups(groups, n_rows: int):
    """An integer array of one group id per row, or an InputError that says what to pass."""
    from fastce.errors import InputError

    array = np.asarray(groups)
    if array.ndim != 1 or array.shape[0] != n_rows:
        raise InputError(
            f"groups must hold one id per row, shape ({n_rows},); got shape {array.shape}.", argument="groups"
        )
    if array.dtype.kind not in "iub":
        raise InputError(
            f"groups must be integer ids (e.g. the document or patient of each row), got dtype {array.dtype}; "
            "map other ids to integers first, e.g. with np.unique(ids, return_inverse=True)[1].",
            argument="groups",
        )
    if array.dtype.kind == "u" and array.dtype.itemsize == 8 and array.size and int(array.max()) > 2**63 - 1:
        raise InputError("groups: ids above 2**63 - 1 do not fit int64; renumber them.", argument="groups")
    return array


# The score kernel's per-row columns (kernels.S_*), as literals: numba freezes globals into the code and
# keys its cache on this file alone (row_values checks them).
_S_LOSS, _S_BRIER, _S_RANK = 0, 3, 4


def row_values(stats, top_k, num_classes: int) -> np.ndarray:
    """Per-row loss, Brier term (as the Brier score scales it) and top-k hits, from ``kernels.S_*`` columns."""
    from fastce import kernels as K

    assert (_S_LOSS, _S_BRIER, _S_RANK) == (K.S_LOSS, K.S_BRIER, K.S_RANK)
    values = np.empty((stats.shape[0], 2 + len(top_k)))
    _fill_row_values(stats, np.asarray(top_k, dtype=np.int64), 0.5 if num_classes == 2 else 1.0, values)
    return values


@kernel(**KERNEL_OPTIONS)
def _fill_row_values(stats, top_k, half, values):
    """row_values in one compiled pass (numpy's column operations took 10 ns a row, with their temporaries)."""
    for r in range(stats.shape[0]):
        values[r, 0] = stats[r, _S_LOSS]
        values[r, 1] = half * stats[r, _S_BRIER]
        for i in range(top_k.shape[0]):
            values[r, 2 + i] = 1.0 if stats[r, _S_RANK] < top_k[i] else 0.0


def read_clustered(read, ids, top_k, num_classes: int):
    """``read(on_rows)`` (a score read that hands each slice's per-row statistics to ``on_rows``, see
    ``_accumulate.accumulate_matrix``) with the rows' values folded into fresh group sums, by the
    group ``ids`` of its rows; returns what ``read`` returns, its State carrying the sums."""
    from fastce import _config

    clusters = GroupSums(2 + len(top_k))
    block_rows = _config.block_rows(num_classes)

    def fold(start, _labels, weights, stats, _pred):
        clusters.add_rows(ids[start:start + stats.shape[0]], row_values(stats, top_k, num_classes), weights,
                          block_rows)

    result = read(fold)
    state = result[0] if isinstance(result, tuple) else result
    state.clusters = clusters
    return result


def clustered(metrics, clusters: GroupSums):
    """``metrics`` with the standard errors of ``clusters`` (see ``row_values``) and ``n_groups``."""
    import dataclasses

    ks = list(metrics.top_k_accuracy)
    means = [metrics.cross_entropy, metrics.brier] + [metrics.top_k_accuracy[k] for k in ks]
    errors = clusters.standard_errors(means)
    stderr = {"cross_entropy": errors[0], "brier": errors[1], "top_k_accuracy": dict(zip(ks, errors[2:]))}
    return dataclasses.replace(metrics, stderr=stderr, n_groups=clusters.n_groups)


def clustered_means(metrics, clusters: GroupSums, names):
    """``metrics`` with the clustered errors of the means ``names`` (Metrics fields, in the order of the
    group sums' values) in place of its own, and ``n_groups``; ``top_k_accuracy`` {1: ...} follows the
    task's accuracy (the last name)."""
    import dataclasses

    errors = clusters.standard_errors([getattr(metrics, name) for name in names])
    stderr = {name: error for name, error in zip(names, errors) if name in metrics.stderr}
    stderr["top_k_accuracy"] = {1: errors[-1]}
    return dataclasses.replace(metrics, stderr=stderr, n_groups=clusters.n_groups)

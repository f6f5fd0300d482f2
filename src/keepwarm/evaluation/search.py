"""Exact nearest-neighbour search by brute force, over vectors kept on disk.

The numbers an evaluation reports should measure the model, not an approximate index,
so every query is scored against every document. Memory stays bounded whatever the
corpus size: document vectors live in a `.npy` file written and read in row blocks with
positional I/O (no block stays mapped or cached by this process), each block is scored
against the queries in slices, and only the k best of each query survive a block.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

import numpy as np

BLOCK_ROWS = 16_384  # document vectors read and scored at a time
_QUERY_ROWS = 256  # queries scored against one block at a time: 256 × 16384 float32 = 16 MiB

# (query rows, a block of document rows) -> their scores [queries, documents], dense
Score = Callable[[Any, Any], np.ndarray]


class VectorFile:
    """`rows` vectors of `dims` values (float32, or `dtype`) in a `.npy` file (np.load reads it too).

    Blocks may be written in any order and from several threads at once.
    """

    def __init__(self, path: Path, rows: int, dims: int, dtype: type[np.floating] = np.float32) -> None:
        self.path, self.rows, self.dims, self.dtype = path, rows, dims, np.dtype(dtype)
        header = np.lib.format.open_memmap(path, mode="w+", dtype=self.dtype, shape=(rows, dims))
        self._offset = header.offset
        del header  # the file now has its header and full (sparse) size
        self._fd = os.open(path, os.O_RDWR)

    def write(self, start: int, block: np.ndarray) -> None:
        """Store `block` as rows start, start + 1, …"""
        data = np.ascontiguousarray(block, dtype=self.dtype)
        if data.ndim != 2 or data.shape[1] != self.dims or start + len(data) > self.rows:
            raise ValueError(
                f"block of shape {data.shape} does not fit rows {start}.. of {self.rows}×{self.dims}"
            )
        os.pwrite(self._fd, data.tobytes(), self._offset + start * self._row_bytes)

    def blocks(self, rows: int = BLOCK_ROWS) -> Iterator[np.ndarray]:
        """The vectors in consecutive blocks of `rows` rows (the last may be shorter)."""
        for start in range(0, self.rows, rows):
            count = min(rows, self.rows - start)
            data = os.pread(self._fd, count * self._row_bytes, self._offset + start * self._row_bytes)
            yield np.frombuffer(data, dtype=self.dtype).reshape(count, self.dims)

    @property
    def _row_bytes(self) -> int:
        return self.dims * self.dtype.itemsize

    def close(self) -> None:
        os.close(self._fd)


def array_blocks(vectors: np.ndarray, rows: int = BLOCK_ROWS) -> Iterator[np.ndarray]:
    """An in-memory matrix as the same consecutive blocks a VectorFile yields."""
    for start in range(0, len(vectors), rows):
        yield vectors[start : start + rows]


def dot(queries: Any, block: Any) -> np.ndarray:
    """Dense rows' scores against a block of dense rows: their dot products."""
    return queries @ block.T


def exact_search(
    queries: Any, blocks: Iterable[Any], k: int, score: Score = dot
) -> tuple[np.ndarray, np.ndarray]:
    """The k highest scores of each query over all document blocks: (indices, scores).

    `queries` are rows that slice like a matrix (NumPy; float64 stays float64, anything
    else is scored in float32), or any rows `score` takes, such as scipy.sparse ones.
    Rows are sorted best first; equal scores keep the lower document index first.
    """
    if isinstance(queries, np.ndarray) and queries.dtype != np.float64:
        queries = np.ascontiguousarray(queries, dtype=np.float32)
    count = queries.shape[0]
    slices = [queries[start : start + _QUERY_ROWS] for start in range(0, count, _QUERY_ROWS)]
    best = [(np.empty((q.shape[0], 0), np.float32), np.empty((q.shape[0], 0), np.int64)) for q in slices]
    seen = 0
    for block in blocks:
        for n, (part, (scores, found)) in enumerate(zip(slices, best, strict=True)):
            best[n] = _merge(scores, found, score(part, block), seen, k)
        seen += block.shape[0]
    if not best:
        return np.empty((0, min(k, seen)), np.int64), np.empty((0, min(k, seen)), np.float32)
    scores, found = np.vstack([s for s, _ in best]), np.vstack([f for _, f in best])
    order = np.lexsort((found, -scores), axis=1)
    return np.take_along_axis(found, order, axis=1), np.take_along_axis(scores, order, axis=1)


def _merge(
    scores: np.ndarray, found: np.ndarray, block_scores: np.ndarray, first: int, k: int
) -> tuple[np.ndarray, np.ndarray]:
    """The k best of the best so far and a new block's scores (documents first, first + 1, …), unordered."""
    merged = np.hstack([scores, block_scores])
    if merged.shape[1] <= k:
        keep = np.broadcast_to(np.arange(merged.shape[1]), merged.shape)
    else:
        keep = np.argpartition(merged, merged.shape[1] - k, axis=1)[:, -k:]
    held = found.shape[1]
    ids = keep - held + first  # columns past the ones held are the block's documents
    if held:
        ids = np.where(keep < held, np.take_along_axis(found, np.minimum(keep, held - 1), axis=1), ids)
    return np.take_along_axis(merged, keep, axis=1), ids

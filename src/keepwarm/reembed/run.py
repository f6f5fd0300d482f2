"""The re-embedding loop: corpus chunks in, committed parts out, resumable at any point.

Two chunks are in flight at once, so the model is never idle while a part is being
written; parts are committed in corpus order, so the rows done are always a prefix
of the corpus and a resumed run simply skips them.
"""

from __future__ import annotations

import time
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np
from tqdm import tqdm

from keepwarm.errors import ConfigError
from keepwarm.reembed.dataset import SourceState, VectorDataset
from keepwarm.reembed.embedders import Embedder
from keepwarm.reembed.reader import Corpus

_IN_FLIGHT = 2


@dataclass
class RunReport:
    """What this run did (not counting earlier, interrupted runs)."""

    rows: int = 0
    skipped: int = 0
    tokens: int = 0
    seconds: float = 0.0


def _starting_state(corpus: Corpus, dataset: VectorDataset) -> SourceState:
    stat = corpus.path.stat()
    fresh = SourceState(rows_done=0, size=stat.st_size, mtime_ns=stat.st_mtime_ns)
    state = dataset.source(corpus.path)
    if state is None:
        return fresh
    if (state.size, state.mtime_ns) != (fresh.size, fresh.mtime_ns):
        raise ConfigError(
            f"{corpus.path} changed since {state.rows_done} of its rows were embedded into {dataset.folder}; "
            "write to a new output"
        )
    return state


def reembed(
    corpus: Corpus,
    dataset: VectorDataset,
    embedder: Embedder,
    *,
    checkpoint_rows: int,
    show_progress: bool = True,
) -> RunReport:
    """Embed every row of `corpus` not yet in `dataset`, committing every `checkpoint_rows` rows."""
    state = _starting_state(corpus, dataset)
    report = RunReport(skipped=state.rows_done)
    if state.complete:
        return report
    bar = tqdm(
        total=corpus.count(),
        initial=state.rows_done,
        unit="rows",
        disable=not show_progress,
        dynamic_ncols=True,
        smoothing=0.1,
    )
    started = clock = time.monotonic()
    pending: deque[tuple[list[tuple[str, str]], Future[tuple[np.ndarray, int]]]] = deque()

    def commit() -> None:
        nonlocal state, clock
        chunk, future = pending.popleft()
        vectors, tokens = future.result()
        now = time.monotonic()
        state = SourceState(state.rows_done + len(chunk), state.size, state.mtime_ns)
        dataset.append(
            [identifier for identifier, _ in chunk],
            vectors,
            source=state,
            source_path=corpus.path,
            tokens=tokens,
            seconds=now - clock,
        )
        clock = now
        report.rows += len(chunk)
        report.tokens += tokens
        bar.update(len(chunk))
        bar.set_postfix_str(f"{report.tokens / max(now - started, 1e-9):,.0f} tokens/s")

    with ThreadPoolExecutor(_IN_FLIGHT, "keepwarm-reembed-chunk") as pool:
        try:
            for chunk in corpus.chunks(checkpoint_rows, skip=state.rows_done):
                pending.append((chunk, pool.submit(embedder.embed, [text for _, text in chunk])))
                if len(pending) >= _IN_FLIGHT:
                    commit()
            while pending:
                commit()
        finally:
            for _, future in pending:
                future.cancel()
            bar.close()
    dataset.mark_complete(
        corpus.path, SourceState(state.rows_done, state.size, state.mtime_ns, complete=True)
    )
    report.seconds = time.monotonic() - started
    return report

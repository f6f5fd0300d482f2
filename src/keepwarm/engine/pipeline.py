"""One request's way through a loaded model: plan, queue, wait, assemble.

Planning tokenizes the inputs (on the event loop when that is cheaper than a thread
hand-off, else on the tokenizer threads), answers what the cache knows and collapses
repeated inputs; the rest is queued as one job for the model's worker. Once the job is
done the vectors are assembled in input order: computed and cached ones together,
chunk windows combined into one vector per input, cut to the requested dimensions.
`run` (asyncio) and `run_sync` (threads) are the same steps.
"""

from __future__ import annotations

import asyncio
import dataclasses
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import partial

import numpy as np

from keepwarm.catalog.colbert import SIDES
from keepwarm.engine import colbert
from keepwarm.engine.cache import EmbeddingCache, cache_key
from keepwarm.engine.calibration import Calibrations
from keepwarm.engine.model import ServedModel
from keepwarm.engine.tokenization import Tokenized
from keepwarm.engine.types import Admission, Embeddings, EmbedOptions, EngineSettings, Inputs, Timings
from keepwarm.engine.work import DENSE_ONLY, ONLINE, Job, WorkItem
from keepwarm.errors import InvalidRequest, WrongTask
from keepwarm.metrics import Metrics
from keepwarm.outputs.compress import CALIBRATED, OUTPUT_DTYPES
from keepwarm.runtimes.pooling import l2_normalize

# Requests up to this many characters (or token ids) are tokenized on the event loop:
# that takes less time than the hand-off to a thread and back. Larger requests go to the
# tokenizer threads, so the event loop keeps answering other requests meanwhile.
_INLINE_TOKENIZE_SIZE = 2048
_CALIBRATION_OPTIONS = EmbedOptions(truncate=True)
_DENSE = ("dense",)


@dataclass(frozen=True)
class Rows:
    """A request's model rows, one per window in order, and what the cache saved."""

    values: np.ndarray
    tokenized: Tokenized
    cached_inputs: int  # windows answered from the cache or by a repeat within the request
    cached_tokens: int
    timings: Timings
    extras: list | None = None  # each window's sparse and multi-vector outputs, when asked for (RowOutputs)


@dataclass
class _Plan:
    """One request after tokenization and cache lookup: what is known, what to compute."""

    tokenized: Tokenized
    vectors: list[np.ndarray | None]
    pending: dict[bytes, list[int]]  # distinct inputs to compute -> their positions
    cached_inputs: int = 0
    cached_tokens: int = 0


class Pipeline:
    """The request path shared by every model: see the module docs."""

    def __init__(
        self,
        settings: EngineSettings,
        cache: EmbeddingCache | None,
        metrics: Metrics,
        calibrations: Calibrations,
    ) -> None:
        self._settings = settings
        self._cache = cache
        self._metrics = metrics
        self._calibrations = calibrations
        self._tokenize_pool = ThreadPoolExecutor(settings.tokenizer_threads, "keepwarm-tokenize")
        self._calibration_pool = ThreadPoolExecutor(1, "keepwarm-calibrate")

    async def run(
        self, served: ServedModel, inputs: Inputs, options: EmbedOptions, admit: Admission | None
    ) -> Embeddings:
        """Embed `inputs` with `served`; cancelling it drops the request's queued inputs."""
        _check_options(served, options)
        tokenize = partial(self._tokenize, served, inputs, options)
        wanted = frozenset(options.outputs)
        rows = await self.rows(
            served,
            tokenize,
            _size(inputs),
            options.priority,
            admit,
            wanted,
            unnormalized=_unnormalized(served, options),
        )
        result = self._embeddings(served, rows, options)
        if not CALIBRATED.intersection(options.output_dtypes):
            return result
        loop = asyncio.get_running_loop()
        ranges = await loop.run_in_executor(self._calibration_pool, self._ranges, served, options)
        return dataclasses.replace(result, ranges=ranges)

    def run_sync(
        self, served: ServedModel, inputs: Inputs, options: EmbedOptions, admit: Admission | None
    ) -> Embeddings:
        """Blocking `run`, for scripts, benchmarks and worker threads."""
        _check_options(served, options)
        tokenize = partial(self._tokenize, served, inputs, options)
        rows = self.rows_sync(
            served,
            tokenize,
            options.priority,
            admit,
            frozenset(options.outputs),
            unnormalized=_unnormalized(served, options),
        )
        result = self._embeddings(served, rows, options)
        if not CALIBRATED.intersection(options.output_dtypes):
            return result
        return dataclasses.replace(result, ranges=self._ranges(served, options))

    async def rows(
        self,
        served: ServedModel,
        tokenize: Callable[[], Tokenized],
        size: int,
        priority: int,
        admit: Admission | None,
        outputs: frozenset[str] = DENSE_ONLY,
        *,
        unnormalized: bool = False,
    ) -> Rows:
        """The model's row for every window `tokenize()` makes; `size` (characters) says where to tokenize.

        The way every task goes through a model: embeddings pool and combine the rows,
        rerankers and classifiers score them (engine/scoring.py). `outputs` other than
        dense come back per window in `Rows.extras`, from the same model call.
        `unnormalized` rows skip the model's Normalize module, and the cache (which holds
        the model's own rows).
        """
        started = time.perf_counter()
        if size <= _INLINE_TOKENIZE_SIZE:  # a thread hand-off costs more than this much work
            plan = self._plan(served, tokenize(), outputs, unnormalized)
        else:
            loop = asyncio.get_running_loop()
            plan = await loop.run_in_executor(
                self._tokenize_pool, lambda: self._plan(served, tokenize(), outputs, unnormalized)
            )
        tokenization = time.perf_counter() - started
        job = self._submit(served, plan, priority, admit, outputs, unnormalized)
        try:
            await asyncio.wrap_future(job.future)
        except asyncio.CancelledError:
            served.scheduler.discard_finished()
            raise
        return self._gather(served, plan, job, tokenization)

    def rows_sync(
        self,
        served: ServedModel,
        tokenize: Callable[[], Tokenized],
        priority: int,
        admit: Admission | None,
        outputs: frozenset[str] = DENSE_ONLY,
        *,
        unnormalized: bool = False,
    ) -> Rows:
        """Blocking `rows`."""
        started = time.perf_counter()
        plan = self._plan(served, tokenize(), outputs, unnormalized)
        tokenization = time.perf_counter() - started
        job = self._submit(served, plan, priority, admit, outputs, unnormalized)
        job.future.result()
        return self._gather(served, plan, job, tokenization)

    def close(self) -> None:
        self._tokenize_pool.shutdown(wait=False, cancel_futures=True)
        self._calibration_pool.shutdown(wait=False, cancel_futures=True)

    def _ranges(self, served: ServedModel, options: EmbedOptions) -> np.ndarray:
        """The calibrated int8/uint8 ranges of `served` at the requested dimensions (blocking)."""

        def embed(texts: list[str], prompt: str | None) -> np.ndarray:
            chosen = prompt if prompt in served.spec.prompts else None
            options = dataclasses.replace(_CALIBRATION_OPTIONS, prompt_name=chosen)
            return self.run_sync(served, texts, options, None).vectors

        return self._calibrations.ranges(served.spec.name, served.version, embed, options.dimensions)

    def _tokenize(self, served: ServedModel, inputs: Inputs, options: EmbedOptions) -> Tokenized:
        """Texts or token ids to the model's windows, under the request's overflow policy."""
        if not inputs:
            raise InvalidRequest("input must not be empty", param="input")
        tokenizer = served.tokenizer.within(options.max_tokens)
        settings = {
            "overflow": overflow_policy(
                served, options.truncate, options.truncate_from == "start", options.truncate_unless_configured
            ),
            "prompt_name": _prompt(served, options),
            "max_chars": self._settings.max_input_chars,
        }
        if served.colbert is not None:  # the side (query or document) decides markers and lengths
            return served.colbert.encode(
                tokenizer, inputs, side=colbert.side(options.prompt_name), **settings
            )
        return tokenizer.encode(inputs, **settings)

    def _plan(
        self, served: ServedModel, tokenized: Tokenized, outputs: frozenset[str], unnormalized: bool
    ) -> _Plan:
        """Check the request's size, then answer from the cache and collapse repeated windows."""
        if tokenized.tokens > self._settings.max_request_tokens:
            raise InvalidRequest(
                f"This request has {tokenized.tokens} tokens; the maximum per request is "
                f"{self._settings.max_request_tokens}. Split it into smaller requests.",
                param="input",
                code="max_tokens_per_request",
            )
        types = tokenized.type_ids or [None] * len(tokenized.ids)
        keys = [cache_key(served.version, ids, t) for ids, t in zip(tokenized.ids, types, strict=True)]
        # the cache holds the model's own dense rows only
        cached = self._cache is not None and outputs == DENSE_ONLY and not unnormalized
        found = self._cache.get_many(keys) if cached else [None] * len(keys)
        plan = _Plan(tokenized, found, {})
        for position, (key, vector) in enumerate(zip(keys, found, strict=True)):
            if vector is not None:
                plan.cached_inputs += 1
                plan.cached_tokens += len(tokenized.ids[position])
            else:
                plan.pending.setdefault(key, []).append(position)
        self._metrics.cache_lookups.labels("hit").inc(plan.cached_inputs)
        self._metrics.cache_lookups.labels("miss").inc(len(keys) - plan.cached_inputs)
        return plan

    def _submit(
        self,
        served: ServedModel,
        plan: _Plan,
        priority: int,
        admit: Admission | None,
        outputs: frozenset[str],
        unnormalized: bool,
    ) -> Job:
        if admit is not None:
            admit(plan.tokenized.tokens)
        if priority != ONLINE and served.background:
            served.background.start()
        timeout = self._settings.queue_timeout if priority == ONLINE else None
        job = Job(
            len(plan.pending),
            served.dimensions,
            priority=priority,
            queue_timeout=timeout,
            outputs=outputs,
            normalized=not unnormalized,
        )
        tokenized = plan.tokenized
        items = [
            WorkItem(
                tokenized.ids[positions[0]],
                job,
                n,
                type_ids=_at(tokenized.type_ids, positions[0]),
                attention=_at(tokenized.attention, positions[0]),
                keep=_at(tokenized.keep, positions[0]),
            )
            for n, positions in enumerate(plan.pending.values())
        ]
        if items:
            served.scheduler.submit(items)
        else:
            job.future.set_result(job.vectors)
        return job

    def _gather(self, served: ServedModel, plan: _Plan, job: Job, tokenization: float) -> Rows:
        """Every window's row in order, computed and cached ones together; fresh rows go to the cache."""
        computed = job.vectors
        values = np.empty((len(plan.vectors), computed.shape[1]), dtype=np.float32)
        for position, vector in enumerate(plan.vectors):
            if vector is not None:
                values[position] = vector
        for row, positions in enumerate(plan.pending.values()):
            values[positions] = computed[row]
        if self._cache is not None and plan.pending and job.extras is None and job.normalized:
            self._cache.put_many([(key, computed[row]) for row, key in enumerate(plan.pending)])
        repeated = sum(len(p) - 1 for p in plan.pending.values())
        saved_tokens = plan.cached_tokens + sum(
            len(plan.tokenized.ids[p[0]]) * (len(p) - 1) for p in plan.pending.values()
        )
        timings = _timings(job, tokenization)
        extras = None
        if job.extras is not None:
            extras = [None] * len(plan.vectors)
            for row, positions in enumerate(plan.pending.values()):
                for position in positions:
                    extras[position] = job.extras[row]
        return Rows(values, plan.tokenized, plan.cached_inputs + repeated, saved_tokens, timings, extras)

    def _embeddings(self, served: ServedModel, rows: Rows, options: EmbedOptions) -> Embeddings:
        """Vectors per input: chunk windows combined, cut to the requested dimensions; other outputs too."""
        vectors, dimensions = rows.values, options.dimensions
        if rows.tokenized.owners is not None:
            vectors = _combine_chunks(
                vectors, rows.tokenized, normalize=served.spec.normalize and options.normalize
            )
        if dimensions is not None and dimensions != served.dimensions and vectors.shape[1]:
            vectors = vectors[:, :dimensions]
            vectors = l2_normalize(vectors) if options.normalize else vectors
        return Embeddings(
            vectors,
            rows.tokenized.tokens,
            served.info,
            rows.cached_inputs,
            rows.cached_tokens,
            rows.timings,
            **_extras(rows, options),
        )


def check_task(served: ServedModel, task: str) -> None:
    """Refuse a request for another task than the model serves, naming the one it does."""
    if served.spec.task != task:
        raise WrongTask(served.spec.name, served.spec.task, task)


def _extras(rows: Rows, options: EmbedOptions) -> dict[str, list]:
    """The sparse and multi-vector outputs asked for, in input order."""
    if rows.extras is None:
        return {}
    extras: dict[str, list] = {}
    if "sparse" in options.outputs:
        extras["sparse"] = [row.sparse.top(options.sparse_top_k) for row in rows.extras]
    if "multivector" in options.outputs:
        extras["multivectors"] = [row.multivector for row in rows.extras]
    return extras


def overflow_policy(
    served: ServedModel, truncate: bool | None, from_start: bool = False, truncate_by_default: bool = False
) -> str:
    """What the tokenizer does with an over-long input: the model's policy unless the request says.

    `truncate_by_default`: a request that does not say truncates where the model would refuse.
    """
    if truncate is None and truncate_by_default and served.spec.overflow == "error":
        truncate = True
    if truncate is None:
        return served.spec.overflow
    if not truncate:
        return "error"
    return "truncate_start" if from_start else "truncate"


def _at(rows: list[np.ndarray] | None, position: int) -> np.ndarray | None:
    return None if rows is None else rows[position]


def _side_only(served: ServedModel, prompt_name: str | None) -> bool:
    """A ColBERT side (query, document) the model has no prompt of: it picks markers, adds no text."""
    return served.spec.colbert is not None and prompt_name in SIDES and prompt_name not in served.spec.prompts


def _prompt(served: ServedModel, options: EmbedOptions) -> str | None:
    name = options.prompt_name
    if name not in served.spec.prompts and (options.optional_prompt or _side_only(served, name)):
        return None
    return name


def _timings(job: Job, tokenization: float) -> Timings:
    started = job.started if job.started is not None else job.submitted
    return Timings(
        tokenization=tokenization,
        queue=started - job.submitted,
        inference=(job.completed or started) - started,
        compute=job.compute_seconds,
    )


def _size(inputs: Inputs) -> int:
    """Characters (or token ids) in a request: a cheap measure of its tokenization work."""
    return sum(len(item) for item in inputs)


def _unnormalized(served: ServedModel, options: EmbedOptions) -> bool:
    """Whether the request wants rows the model would otherwise normalise."""
    return served.spec.normalize and not options.normalize


def _check_options(served: ServedModel, options: EmbedOptions) -> None:
    check_task(served, "embed")
    spec, dimensions = served.spec, options.dimensions
    if dimensions is not None:
        sizes = [*spec.matryoshka_dims, served.dimensions]
        if (spec.matryoshka_dims or options.matryoshka_only) and dimensions not in sizes:
            raise InvalidRequest(
                f"dimensions must be one of {sizes} for model '{spec.name}' (its own size and "
                f"Matryoshka sizes), got {dimensions}",
                param="dimensions",
            )
        if not 1 <= dimensions <= served.dimensions:
            raise InvalidRequest(
                f"dimensions must be between 1 and {served.dimensions} for model '{spec.name}', "
                f"got {dimensions}",
                param="dimensions",
            )
    if not options.normalize and options.outputs != _DENSE:
        raise InvalidRequest("normalize false applies to dense vectors only", param="normalize")
    missing = [kind for kind in options.outputs if kind not in spec.outputs]
    if missing:
        raise InvalidRequest(
            f"model '{spec.name}' has no {missing[0]} output; it answers: {', '.join(spec.outputs)}",
            param="outputs",
            code="output_not_available",
        )
    if options.outputs != _DENSE and (options.truncate is None and spec.overflow == "chunk"):
        raise InvalidRequest(
            "sparse and multi-vector outputs need one window per input: send truncate true or false",
            param="truncate",
        )
    if "dense" not in options.outputs and set(options.output_dtypes) - {"float"}:
        raise InvalidRequest(
            "output_dtype compresses dense vectors: ask for the dense output", param="output_dtype"
        )
    unknown = [dtype for dtype in options.output_dtypes if dtype not in OUTPUT_DTYPES]
    if unknown:
        raise InvalidRequest(
            f"output_dtype must be one of {', '.join(OUTPUT_DTYPES)}, got {unknown[0]!r}",
            param="output_dtype",
        )
    if (
        options.prompt_name is not None
        and options.prompt_name not in spec.prompts
        and not options.optional_prompt
        and not _side_only(served, options.prompt_name)
    ):
        sides = SIDES if spec.colbert is not None else ()  # a ColBERT model's sides need no prompt
        allowed = ", ".join(sorted({*spec.prompts, *sides})) or "none (this model has no prompts)"
        raise InvalidRequest(
            f"model '{spec.name}' has no prompt '{options.prompt_name}'; allowed values: {allowed}",
            param="input_type",
        )


def _combine_chunks(vectors: np.ndarray, tokenized: Tokenized, *, normalize: bool) -> np.ndarray:
    """Token-weighted mean of each input's window vectors (renormalised for normalising models)."""
    owners = np.asarray(tokenized.owners)
    weights = np.array([len(ids) for ids in tokenized.ids], dtype=np.float64)
    count = int(owners.max()) + 1
    summed = np.zeros((count, vectors.shape[1]), dtype=np.float64)
    np.add.at(summed, owners, vectors * weights[:, None])
    combined = (summed / np.bincount(owners, weights=weights)[:, None]).astype(np.float32)
    return l2_normalize(combined) if normalize else combined

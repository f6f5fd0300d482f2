"""What a dense pipeline embeds with: a served model, in-process or behind a running server.

Both sides take the same request a user's application sends, through the same path:
the in-process `Engine` (tokenization, scheduler, runtime, dimensions) that `keepwarm
serve` runs, or `/v1/embeddings` of a running server with the `openai` client. Queries
and documents get the model's `query` and `document` prompts when it has them, and
texts longer than the model's window are truncated (as an index builder would ask).
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal, Protocol

import numpy as np

from keepwarm.catalog.spec import OUTPUT_KINDS
from keepwarm.outputs.compress import COMPRESSED_DTYPES
from keepwarm.outputs.sparse import SparseVector

if TYPE_CHECKING:
    import httpx
    import openai

    from keepwarm.engine import Engine
    from keepwarm.engine.tokenization import ModelTokenizer
    from keepwarm.runtimes.base import Runtime

Kind = Literal["query", "document"]


_TARGET_FORMAT = (
    f"MODEL, MODEL,dimensions=N (N ≥ 1), MODEL,dtype={'|'.join(COMPRESSED_DTYPES)} (with or without "
    "dimensions) or MODEL,output=sparse|multivector"
)


@dataclass(frozen=True)
class Target:
    """A model to evaluate: a name, alias or `name@version`, and how its outputs are searched.

    `dimensions` cuts dense vectors; `dtype` asks for compressed dense vectors (searched
    as a vector database searches that dtype); `output` "sparse" searches the model's
    learned sparse vectors instead of its dense ones, "multivector" its token vectors.
    """

    model: str
    dimensions: int | None = None
    dtype: str | None = None
    output: str = "dense"

    @classmethod
    def parse(cls, text: str) -> Target:
        """`MODEL`, then any of `,dimensions=N`, `,dtype=D`, or `MODEL,output=O` alone."""
        model, *options = text.split(",")
        fields: dict[str, str] = {}
        for option in options:
            key, _, value = (part.strip() for part in option.partition("="))
            if key in fields or not _valid(key, value):
                raise ValueError(f"{text!r}: expected {_TARGET_FORMAT}")
            fields[key] = value
        if not model.strip():
            raise ValueError(f"{text!r}: no model name")
        output = fields.get("output", "dense")
        if output != "dense" and len(fields) > 1:
            raise ValueError(f"{text!r}: dimensions and dtype apply to dense vectors, not output={output}")
        dimensions = int(fields["dimensions"]) if "dimensions" in fields else None
        return cls(model.strip(), dimensions, fields.get("dtype"), output)

    @property
    def label(self) -> str:
        """The target as written on the command line (the report's model column)."""
        options = [
            f"{key}={value}"
            for key, value in (("dimensions", self.dimensions), ("dtype", self.dtype))
            if value is not None
        ]
        options += [f"output={self.output}"] if self.output != "dense" else []
        return ",".join([self.model, *options])


def _valid(key: str, value: str) -> bool:
    if key == "dimensions":
        return value.isdigit() and int(value) >= 1
    return value in {"dtype": COMPRESSED_DTYPES, "output": OUTPUT_KINDS}.get(key, ())


@dataclass(frozen=True)
class TargetInfo:
    """What produced the vectors, for the report."""

    version: str
    dtype: str
    runtime: str
    dimensions: int | None  # None for sparse vectors (as many as the vocabulary)


@dataclass(frozen=True)
class Embedded:
    """Vectors in input order, the model tokens they took, and how many the cache answered.

    A sparse target's answer has its sparse vectors in `sparse`, a multi-vector target's
    its token matrices in `multivectors` (and neither has dense columns).
    """

    vectors: np.ndarray
    tokens: int
    cached: int = 0
    sparse: list[SparseVector] | None = None
    multivectors: list[np.ndarray] | None = None

    @property
    def inputs(self) -> int:
        return len(self.vectors)


class Embedder(Protocol):
    """Embeds texts with one target; safe to call from several threads at once."""

    target: Target

    def info(self) -> TargetInfo: ...

    def embed(self, texts: list[str], kind: Kind) -> Embedded: ...


class EngineEmbedder:
    """A target served by an in-process Engine."""

    def __init__(self, engine: Engine, target: Target) -> None:
        from keepwarm.engine import EmbedOptions

        self.target, self._engine = target, engine
        prompts = engine.describe(target.model)[0].spec.prompts
        self._options = {
            kind: EmbedOptions(
                truncate=True,
                dimensions=target.dimensions,
                prompt_name=kind if kind in prompts else None,
                output_dtypes=(target.dtype,) if target.dtype else (),
                outputs=(target.output,),
            )
            for kind in ("query", "document")
        }

    def info(self) -> TargetInfo:
        model = self._engine.embed_sync(self.target.model, ["?"], self._options["query"]).model
        dimensions = self.target.dimensions or model.dimensions if self.target.output == "dense" else None
        return TargetInfo(model.short_version, model.dtype, model.runtime, dimensions)

    def embed(self, texts: list[str], kind: Kind) -> Embedded:
        """Float vectors, or with a `dtype` the compressed ones the engine answers (calibrated ranges)."""
        result = self._engine.embed_sync(self.target.model, texts, self._options[kind])
        vectors = result.compressed(self.target.dtype) if self.target.dtype else result.vectors
        return Embedded(vectors, result.tokens, result.cached_inputs, result.sparse, result.multivectors)


class RuntimeEmbedder:
    """An opened runtime and its model's tokenizer, with no engine around them.

    What a reduced-precision build is measured with while it is built, before any engine
    serves it: the texts are tokenized (prompts, truncation) as the engine would, sorted
    by length into calls of `rows`, and the vectors put back in input order. A runtime
    runs one call at a time (an engine's worker thread sees to that; here a lock does).
    """

    def __init__(self, tokenizer: ModelTokenizer, runtime: Runtime, rows: int = 16) -> None:
        self.target = Target(tokenizer.spec.name)
        self._tokenizer, self._runtime, self._rows = tokenizer, runtime, rows
        self._calls = threading.Lock()

    def info(self) -> TargetInfo:
        return TargetInfo("unreleased build", "?", self._runtime.name, self._runtime.dimensions)

    def embed(self, texts: list[str], kind: Kind) -> Embedded:
        from keepwarm.engine.worker import pad_rows

        prompt = kind if kind in self._tokenizer.spec.prompts else None
        rows = self._tokenizer.encode(texts, overflow="truncate", prompt_name=prompt).ids
        order = sorted(range(len(rows)), key=lambda i: len(rows[i]))
        vectors = np.empty((len(rows), self._runtime.dimensions), dtype=np.float32)
        for start in range(0, len(order), self._rows):
            chosen = order[start : start + self._rows]
            ids, mask = pad_rows([rows[i] for i in chosen], self._tokenizer.pad_id)
            with self._calls:
                vectors[chosen] = self._runtime.embed(ids, mask)
        return Embedded(vectors, sum(len(ids) for ids in rows))


@dataclass(frozen=True)
class Scored:
    """A reranker's relevance score of each document, in input order, and the pair tokens it read."""

    scores: np.ndarray
    tokens: int


class Reranker(Protocol):
    """Scores documents against a query with one reranker; safe to call from several threads at once."""

    model: str

    def score(self, query: str, documents: list[str]) -> Scored: ...


class EngineReranker:
    """A reranker served by an in-process Engine; long documents truncated, as an index's are."""

    def __init__(self, engine: Engine, model: str) -> None:
        from keepwarm.engine import ScoreOptions

        self.model, self._engine, self._options = model, engine, ScoreOptions(truncate=True)

    def score(self, query: str, documents: list[str]) -> Scored:
        result = self._engine.rerank_sync(self.model, query, documents, self._options)
        return Scored(result.scores, result.tokens)


class ServerReranker:
    """A reranker behind a running server's `POST /v1/rerank` (Cohere's shape, as every peer takes it)."""

    def __init__(self, client: httpx.Client, model: str) -> None:
        self.model, self._client = model, client

    def score(self, query: str, documents: list[str]) -> Scored:
        response = self._client.post(
            "rerank", json={"model": self.model, "query": query, "documents": documents}
        )
        if response.status_code != 200:
            raise ValueError(f"rerank with {self.model}: {response.status_code} {response.text[:300]}")
        body = response.json()
        scores = np.empty(len(documents), dtype=np.float32)
        for result in body["results"]:
            scores[result["index"]] = result["relevance_score"]
        return Scored(scores, int((body.get("usage") or {}).get("total_tokens", 0)))


class ServerEmbedder:
    """A target served by a running keepwarm (or any OpenAI-compatible) server."""

    def __init__(self, client: openai.OpenAI, target: Target) -> None:
        self.target, self._client = target, client
        self._described = _describe(client, target.model)
        prompts = self._described.get("prompts") or {}
        self._extra = {
            kind: {"truncate": True, **({"input_type": kind} if kind in prompts else {})}
            for kind in ("query", "document")
        }

    def info(self) -> TargetInfo:
        described = self._described
        dimensions = (
            None
            if self.target.output != "dense"
            else self.target.dimensions
            or described.get("dimensions")
            or len(self.embed(["?"], "query").vectors[0])
        )
        return TargetInfo(
            described.get("version", "?"),
            described.get("dtype", "?"),
            described.get("runtime", "?"),
            dimensions,
        )

    def embed(self, texts: list[str], kind: Kind) -> Embedded:
        """Float vectors (base64, as the client asks by default), a `dtype`'s integers, or another output."""
        target = self.target
        extra: dict[str, Any] = {"dimensions": target.dimensions} if target.dimensions else {}
        body = {**self._extra[kind], **({"outputs": [target.output]} if target.output != "dense" else {})}
        if target.dtype:
            body["output_dtype"] = target.dtype
        if target.dtype or target.output != "dense":  # the client would decode base64 as float32
            extra["encoding_format"] = "float"
        response = self._client.embeddings.create(model=target.model, input=texts, extra_body=body, **extra)
        cached = int(((response.model_extra or {}).get("cache") or {}).get("cached_inputs", 0))
        if target.output != "dense":
            return _other_output(target, response.data, response.usage.prompt_tokens, cached)
        vectors = np.array([item.embedding for item in response.data], dtype=np.float32)
        if target.dtype and not np.array_equal(vectors, np.round(vectors)):
            raise ValueError(f"the server answered {target.model} in floats, not {target.dtype}")
        return Embedded(vectors, response.usage.prompt_tokens, cached)


def _other_output(target: Target, items: list[Any], tokens: int, cached: int) -> Embedded:
    """Each item's `sparse_embedding` or `multi_vector` (keepwarm's extensions; a plain server has none)."""
    name = {"sparse": "sparse_embedding", "multivector": "multi_vector"}[target.output]
    bodies = [(item.model_extra or {}).get(name) for item in items]
    if any(body is None for body in bodies):
        raise ValueError(f"the server answered no {name} for {target.model}")
    empty = np.empty((len(bodies), 0), np.float32)
    if target.output == "sparse":
        sparse = [
            SparseVector(np.asarray(b["indices"], np.int64), np.asarray(b["values"], np.float32))
            for b in bodies
        ]
        return Embedded(empty, tokens, cached, sparse=sparse)
    return Embedded(empty, tokens, cached, multivectors=[np.asarray(b, np.float32) for b in bodies])


def _describe(client: openai.OpenAI, model: str) -> dict[str, Any]:
    """The server's `/v1/models/{model}` fields beyond OpenAI's (a plain OpenAI server has none)."""
    import openai

    try:
        return client.models.retrieve(model).model_extra or {}
    except openai.NotFoundError:
        raise ValueError(f"the server does not serve model '{model}'") from None
    except openai.APIError:
        return {}

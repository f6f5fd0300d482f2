"""Classification dialects: `POST /v1/classify` (vLLM's and Infinity's shape) and TEI's `POST /predict`.

`/v1/classify` takes `{model, input: str | [str]}` and answers, per input in order, the
most probable label, its probability and every label's probability (`probs`, in the
order of the top-level `labels`), in OpenAI's list envelope and error envelope.

TEI's `/predict` takes `{inputs, raw_scores, truncate, truncation_direction}`, `inputs`
in TEI's three shapes: a text `"a"`, one sequence `["a"]` or pair `["a", "b"]`, or a
batch of sequences `[["a"], ["b", "c"]]`. A pair is read through the model's pair
template, as `CrossEncoder` reads it. One input is answered `[{label, score}]` (every
label, most probable first), a batch with a list of those; `raw_scores` gives logits.
A body without `model` goes to the one classifier the key may use, as TEI serves one
model. Errors are TEI's `{error, error_type}`.
"""

from __future__ import annotations

from collections.abc import Awaitable
from typing import Any, Literal, TypeVar

import numpy as np
from fastapi import APIRouter, Depends, Request
from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictStr

from keepwarm.api.auth import Auth
from keepwarm.api.envelopes import OPENAI, TEI, speaks
from keepwarm.api.responses import JSONResponse
from keepwarm.api.schemas import MAX_INPUTS, parse_json_body
from keepwarm.api.serving import Serving
from keepwarm.engine import Classifications, ScoreOptions
from keepwarm.engine.scoring import ClassifyInput
from keepwarm.engine.types import Admission, Authorization
from keepwarm.errors import InvalidRequest
from keepwarm.store import ApiKey

Texts = StrictStr | list[StrictStr]
Item = TypeVar("Item")


def _as_list(value: str | list[str]) -> list[str]:
    return [value] if isinstance(value, str) else value


class ClassifyRequest(BaseModel):
    """`/v1/classify`'s request."""

    model_config = ConfigDict(extra="ignore")

    model: StrictStr = Field(min_length=1)
    input: Texts
    truncate: StrictBool | None = None
    expect_version: StrictStr | None = None


class PredictRequest(BaseModel):
    """text-embeddings-inference's `/predict` request; `model` is keepwarm's addition."""

    model_config = ConfigDict(extra="ignore")

    model: StrictStr | None = Field(default=None, min_length=1)
    inputs: StrictStr | list[StrictStr] | list[list[StrictStr]]
    raw_scores: StrictBool = False
    truncate: StrictBool | None = None
    truncation_direction: Literal["Right", "Left", "right", "left"] = "Right"

    def sequences(self) -> tuple[list[ClassifyInput], bool]:
        """The inputs as texts and pairs, and whether they are a batch (answered with a list per input)."""
        if isinstance(self.inputs, str):
            return [self.inputs], False
        if self.inputs and isinstance(self.inputs[0], list):
            batch = [_sequence(s, f"inputs[{i}]") for i, s in enumerate(self.inputs)]  # type: ignore[arg-type]
            return _check_count(batch, "inputs"), True
        return [_sequence(self.inputs, "inputs")], False  # type: ignore[arg-type]


def _sequence(texts: list[str], param: str) -> ClassifyInput:
    """TEI's sequence: one text, or a pair of texts."""
    if len(texts) == 1:
        return texts[0]
    if len(texts) == 2:
        return texts[0], texts[1]
    raise InvalidRequest(f"{param} must be a text or a pair of texts, got {len(texts)} texts", param=param)


def _check_count(texts: list[Item], param: str) -> list[Item]:
    if not texts:
        raise InvalidRequest(f"{param} must hold 1 to {MAX_INPUTS} inputs, got none", param=param)
    if len(texts) > MAX_INPUTS:
        raise InvalidRequest(
            f"batch size {len(texts)} > maximum allowed batch size {MAX_INPUTS}",
            param=param,
            code="too_many_inputs",
        )
    return texts


def _classify_body(result: Classifications, model: str) -> dict[str, Any]:
    best = result.probabilities.argmax(axis=1)
    data = [
        {
            "index": i,
            "object": "classification",
            "label": result.labels[int(best[i])],
            "score": float(probs[best[i]]),
            "probs": [float(p) for p in probs],
            "num_classes": len(result.labels),
        }
        for i, probs in enumerate(result.probabilities)
    ]
    return {
        "object": "list",
        "data": data,
        "labels": list(result.labels),
        "model": model,
        "usage": {"prompt_tokens": result.tokens, "total_tokens": result.tokens},
        "model_version": result.model.short_version,
    }


def _predictions(result: Classifications, raw: bool) -> list[list[dict[str, Any]]]:
    values = result.logits if raw else result.probabilities
    return [
        [{"label": result.labels[j], "score": float(row[j])} for j in np.argsort(-probs, kind="stable")]
        for row, probs in zip(values, result.probabilities, strict=True)
    ]


def classify_routers(serving: Serving, auth: Auth) -> list[APIRouter]:
    """`/v1/classify` (OpenAI's envelope) and TEI's `/predict` (TEI's)."""
    openai = APIRouter(dependencies=[speaks(OPENAI)], tags=["classify"])
    tei = APIRouter(dependencies=[speaks(TEI)], tags=["classify"])

    @openai.post("/v1/classify")
    async def classify(request: Request, key: ApiKey = Depends(auth.metered_caller)) -> JSONResponse:
        """Every label's probability for each input."""
        body = parse_json_body(ClassifyRequest, await serving.body(request, key))
        texts = _check_count(_as_list(body.input), "input")
        expect = body.expect_version or request.headers.get("x-expect-model-version")
        options = ScoreOptions(truncate=body.truncate, expect_version=expect)

        def call(authorize: Authorization, admit: Admission | None) -> Awaitable[Classifications]:
            return serving.engine.classify(body.model, texts, options, authorize=authorize, admit=admit)

        result = await serving.answer(request, key, body.model, call)
        return JSONResponse(_classify_body(result, body.model), headers=serving.headers(request, result))

    @tei.post("/predict")
    async def predict(request: Request, key: ApiKey = Depends(auth.metered_caller)) -> JSONResponse:
        """Labels and scores for one input or several (text-embeddings-inference's `POST /predict`)."""
        body = parse_json_body(PredictRequest, await serving.body(request, key))
        inputs, batch = body.sequences()
        model = body.model or serving.default_model(key, "classify")
        expect = request.headers.get("x-expect-model-version")
        left = body.truncation_direction.lower() == "left"
        options = ScoreOptions(truncate=body.truncate, truncate_start=left, expect_version=expect)

        def call(authorize: Authorization, admit: Admission | None) -> Awaitable[Classifications]:
            return serving.engine.classify(model, inputs, options, authorize=authorize, admit=admit)

        result = await serving.answer(request, key, model, call)
        predictions = _predictions(result, body.raw_scores)
        content = predictions if batch else predictions[0]
        return JSONResponse(content, headers=serving.headers(request, result))

    return [openai, tei]

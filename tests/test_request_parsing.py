"""Property-based tests of request parsing: any body gives a request or a clear 400, never anything else."""

from __future__ import annotations

import json

from hypothesis import given, settings
from hypothesis import strategies as st

from keepwarm.api.schemas import MAX_INPUTS, EmbeddingRequest, parse_embedding_request
from keepwarm.errors import InvalidRequest

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=12,
)
texts = st.text(min_size=1, max_size=40)
token_ids = st.lists(st.integers(min_value=-(2**40), max_value=2**40), min_size=1, max_size=8)
valid_inputs = st.one_of(
    texts,
    st.lists(texts, min_size=1, max_size=20),
    token_ids,
    st.lists(token_ids, min_size=1, max_size=8),
)
options = st.fixed_dictionaries(
    {},
    optional={
        "encoding_format": st.sampled_from(["float", "base64"]),
        "dimensions": st.integers(min_value=1, max_value=4096),
        "user": st.text(max_size=10),
        "truncate": st.booleans(),
        "input_type": st.sampled_from(["query", "document"]),
        "unknown_extension": json_values,
    },
)


def _json(document: object) -> bytes:
    return json.dumps(document).encode()


def _parse(body: bytes) -> EmbeddingRequest | InvalidRequest:
    try:
        return parse_embedding_request(body)
    except InvalidRequest as error:
        return error


@settings(max_examples=300)
@given(st.binary(max_size=200))
def test_any_bytes_parse_or_give_invalid_request(body: bytes) -> None:
    assert isinstance(_parse(body), EmbeddingRequest | InvalidRequest)


@settings(max_examples=300)
@given(json_values)
def test_any_json_document_parses_or_names_what_is_wrong(document) -> None:  # noqa: ANN001
    result = _parse(_json(document))
    if isinstance(result, InvalidRequest):
        assert result.message and result.status == 400
    else:
        assert isinstance(document, dict) and "input" in document and "model" in document


@settings(max_examples=300)
@given(
    st.dictionaries(
        st.sampled_from(
            [
                "input",
                "model",
                "encoding_format",
                "dimensions",
                "user",
                "truncate",
                "input_type",
                "prompt_name",
            ]
        ),
        json_values,
    )
)
def test_wrong_field_values_name_the_field(document) -> None:  # noqa: ANN001
    """Any document of known fields is a request, or a 400 whose `param` names a wrong or missing field."""
    result = _parse(_json(document))
    if isinstance(result, EmbeddingRequest):
        assert {"input", "model"} <= set(document)
        return
    assert result.status == 400 and result.param is not None, result.message
    field = result.param.split("[")[0].split(".")[0]
    assert field in document or field in {"input", "model"} - set(document), (result.param, document)


@settings(max_examples=300)
@given(valid_inputs, st.text(min_size=1, max_size=20), options)
def test_every_valid_request_is_accepted_as_sent(value, model: str, extra: dict) -> None:  # noqa: ANN001
    request = parse_embedding_request(_json({"input": value, "model": model, **extra}))
    expected = [value] if isinstance(value, str) or isinstance(value[0], int) else value
    assert request.input == expected and request.model == model
    assert request.encoding_format == extra.get("encoding_format", "float")
    assert request.dimensions == extra.get("dimensions") and request.truncate == extra.get("truncate")
    assert request.prompt == extra.get("input_type")


@given(st.lists(texts, min_size=1, max_size=5), st.integers(min_value=0, max_value=4), st.just(""))
def test_an_empty_string_anywhere_is_refused_by_position(items: list[str], position: int, empty: str) -> None:
    position = min(position, len(items))
    items = [*items[:position], empty, *items[position:]]
    error = _parse(_json({"input": items, "model": "m"}))
    assert isinstance(error, InvalidRequest) and f"input[{position}]" in error.message


@settings(max_examples=20)
@given(st.integers(min_value=MAX_INPUTS + 1, max_value=MAX_INPUTS + 50))
def test_more_than_the_maximum_inputs_is_refused(count: int) -> None:
    error = _parse(_json({"input": ["x"] * count, "model": "m"}))
    assert isinstance(error, InvalidRequest) and str(MAX_INPUTS) in error.message

"""The `/v1/embeddings` request: parsed and checked with messages a caller can act on.

The body is parsed by pydantic-core straight from bytes (fast, and it rejects invalid
UTF-8 and malformed JSON), and `input` is checked by hand: its four accepted shapes
are easier to explain in one clear message than through a union's error list.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal, TypeVar

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PlainValidator,
    StrictBool,
    StrictInt,
    StrictStr,
    ValidationError,
    WithJsonSchema,
    model_validator,
)

from keepwarm.engine import ONLINE, EmbedOptions
from keepwarm.errors import InvalidRequest

MAX_INPUTS = 2048
Body = TypeVar("Body", bound=BaseModel)

_INPUT_SHAPES = "a string, an array of strings, an array of token ids, or an array of token-id arrays"
_INPUT_SCHEMA = {
    "anyOf": [
        {"type": "string", "minLength": 1},
        {"type": "array", "items": {"type": "string", "minLength": 1}, "minItems": 1, "maxItems": MAX_INPUTS},
        {"type": "array", "items": {"type": "integer", "minimum": 0}, "minItems": 1},
        {
            "type": "array",
            "items": {"type": "array", "items": {"type": "integer", "minimum": 0}, "minItems": 1},
            "minItems": 1,
            "maxItems": MAX_INPUTS,
        },
    ],
    "description": f"Text or token ids to embed: {_INPUT_SHAPES}.",
}


def _is_token(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _check_token_array(values: list[Any], param: str) -> list[int]:
    if not values:
        raise InvalidRequest(f"{param} must not be an empty array", param=param)
    for position, value in enumerate(values):
        if not _is_token(value):
            raise InvalidRequest(
                f"{param}[{position}] must be an integer token id, got {type(value).__name__}", param=param
            )
    return values


def _check_input(value: Any) -> list[str] | list[list[int]]:
    """Normalise the four accepted shapes to a list of texts or a list of id lists."""
    if isinstance(value, str):
        if not value:
            raise InvalidRequest("input must not be an empty string", param="input")
        return [value]
    if not isinstance(value, list):
        raise InvalidRequest(f"input must be {_INPUT_SHAPES}", param="input")
    if not value:
        raise InvalidRequest("input must not be an empty array", param="input")
    first = value[0]
    if _is_token(first):
        return [_check_token_array(value, "input")]
    if len(value) > MAX_INPUTS:
        raise InvalidRequest(f"input has {len(value)} items; the maximum is {MAX_INPUTS}", param="input")
    if isinstance(first, str):
        for index, text in enumerate(value):
            if not isinstance(text, str):
                raise InvalidRequest(f"input[{index}] must be a string like the other items", param="input")
            if not text:
                raise InvalidRequest(f"input[{index}] must not be an empty string", param="input")
        return value
    if isinstance(first, list):
        for index, ids in enumerate(value):
            if not isinstance(ids, list):
                raise InvalidRequest(
                    f"input[{index}] must be an array of token ids like the other items", param="input"
                )
            _check_token_array(ids, f"input[{index}]")
        return value
    raise InvalidRequest(f"input must be {_INPUT_SHAPES}; input[0] is {type(first).__name__}", param="input")


EmbeddingInput = Annotated[
    list[str] | list[list[int]], PlainValidator(_check_input), WithJsonSchema(_INPUT_SCHEMA)
]


class EmbeddingRequest(BaseModel):
    """OpenAI's embeddings request, plus keepwarm's extensions. Unknown fields are ignored."""

    model_config = ConfigDict(extra="ignore")

    input: EmbeddingInput
    model: StrictStr = Field(min_length=1)
    encoding_format: Literal["float", "base64"] | None = "float"
    dimensions: StrictInt | None = Field(default=None, ge=1)
    user: StrictStr | None = None
    truncate: StrictBool | None = Field(
        default=None,
        description="keepwarm extension: true embeds only the first tokens of inputs over the model's limit; "
        "false refuses them; absent follows the model's `overflow` setting.",
    )
    input_type: Literal["query", "document"] | None = Field(
        default=None, description="keepwarm extension: apply the model's `query` or `document` prompt."
    )
    prompt_name: StrictStr | None = Field(
        default=None, description="keepwarm extension: apply any of the model's named prompts."
    )
    expect_version: StrictStr | None = Field(
        default=None,
        description="keepwarm extension: the model version your index was built with; 409 if `model` "
        "now resolves to another (same as the X-Expect-Model-Version header).",
    )
    output_dtype: Literal["float", "int8", "uint8", "binary", "ubinary"] | None = Field(
        default=None,
        description="keepwarm extension (Voyage's name): int8/uint8 per-dimension scalar quantization with "
        "the model version's calibrated ranges, binary/ubinary packed sign bits (8 dimensions per value).",
    )

    outputs: list[Literal["dense", "sparse", "multivector"]] | None = Field(
        default=None,
        min_length=1,
        description="keepwarm extension: which of the model's outputs to answer (default dense), all from "
        "one model call: `embedding`, `sparse_embedding` {indices, values}, `multi_vector` token vectors.",
    )
    sparse_top_k: StrictInt | None = Field(
        default=None, ge=1, description="keepwarm extension: keep each sparse vector's heaviest entries only."
    )

    @model_validator(mode="after")
    def _one_prompt(self) -> EmbeddingRequest:
        if self.input_type and self.prompt_name and self.input_type != self.prompt_name:
            raise InvalidRequest(
                f"input_type '{self.input_type}' and prompt_name '{self.prompt_name}' disagree; "
                "send one of them",
                param="input_type",
            )
        return self

    @property
    def prompt(self) -> str | None:
        """The prompt to apply, from either spelling."""
        return self.input_type or self.prompt_name

    def options(self, expect_version: str | None = None, priority: int = ONLINE) -> EmbedOptions:
        """What this body asks of the engine (the HTTP route and batch lines alike).

        `expect_version` is the header's value; the body's field wins when both are sent.
        """
        return EmbedOptions(
            truncate=self.truncate,
            dimensions=self.dimensions,
            prompt_name=self.prompt,
            expect_version=self.expect_version or expect_version,
            priority=priority,
            output_dtypes=(self.output_dtype,) if self.output_dtype else (),
            outputs=tuple(dict.fromkeys(self.outputs)) if self.outputs else ("dense",),
            sparse_top_k=self.sparse_top_k,
        )


def _describe(error: dict[str, Any]) -> tuple[str, str | None]:
    """One readable sentence and the offending parameter for pydantic's first error."""
    if error["type"] == "json_invalid":
        return (
            "We could not parse the JSON body of your request. The body must be valid UTF-8 "
            f"JSON ({error['msg']}).",
            None,
        )
    if error["type"] == "model_type" or not error["loc"]:
        return "The request body must be a JSON object.", None
    param = ".".join(str(part) for part in error["loc"])
    if error["type"] == "missing":
        return f"Missing required parameter: '{param}'.", param
    return f"Invalid value for '{param}': {error['msg']}.", param


def parse_json_body(schema: type[Body], body: bytes) -> Body:
    """Parse and validate a JSON request body into `schema`, raising InvalidRequest with a clear message."""
    if not body.strip():
        raise InvalidRequest("The request body is empty; send a JSON object.")
    try:
        return schema.model_validate_json(body)
    except ValidationError as exc:
        message, param = _describe(exc.errors(include_url=False)[0])
        raise InvalidRequest(message, param=param) from None


def parse_embedding_request(body: bytes) -> EmbeddingRequest:
    """Parse and validate a `/v1/embeddings` body (HTTP route and batch lines alike)."""
    return parse_json_body(EmbeddingRequest, body)

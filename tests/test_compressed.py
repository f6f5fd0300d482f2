"""Compressed outputs equal sentence-transformers' quantize_embeddings, with ranges recorded per version."""

from __future__ import annotations

import shutil
import threading
from pathlib import Path

import numpy as np
import pytest
from helpers.server import wait_for
from sentence_transformers.quantization import quantize_embeddings

from keepwarm.catalog import ArtifactStore
from keepwarm.engine.calibration import Calibrations
from keepwarm.outputs.compress import quantize, ranges_of
from keepwarm.runtimes.pooling import l2_normalize
from keepwarm.runtimes.probe import calibration_texts

RNG = np.random.default_rng(7)
CALIBRATION = l2_normalize(RNG.normal(size=(300, 24)).astype(np.float32))
VECTORS = l2_normalize(RNG.normal(size=(20, 24)).astype(np.float32))


@pytest.mark.parametrize("dtype", ["int8", "uint8", "binary", "ubinary"])
def test_each_dtype_equals_quantize_embeddings_given_the_same_ranges(dtype: str) -> None:
    ranges = ranges_of(CALIBRATION)
    expected = quantize_embeddings(VECTORS, dtype, ranges=ranges)
    actual = quantize(VECTORS, dtype, ranges)
    assert actual.dtype == expected.dtype
    assert np.array_equal(actual, expected)


def test_binary_packs_sign_bits_eight_per_byte_most_significant_first() -> None:
    vector = np.array([[1, -1, 1, -1, -1, -1, -1, 1, 0.5, 0, 0, 0, 0, 0, 0, 0]], dtype=np.float32)
    assert quantize(vector, "ubinary").tolist() == [[0b10100001, 0b10000000]]
    assert quantize(vector, "binary").tolist() == [[0b10100001 - 128, 0b10000000 - 128]]


def test_calibration_is_built_once_per_version_and_read_back_by_a_restart(tmp_path: Path) -> None:
    built = []

    def embed(texts: list[str], prompt: str | None) -> np.ndarray:
        if texts == calibration_texts():  # not the search sample the build also embeds
            built.append(len(texts))
        return CALIBRATION[: len(texts)]

    first = Calibrations(ArtifactStore(tmp_path)).ranges("m", "a" * 64, embed, None)
    again = Calibrations(ArtifactStore(tmp_path)).ranges("m", "a" * 64, embed, None)  # a restart
    assert len(built) == 1
    assert np.array_equal(first, again)
    Calibrations(ArtifactStore(tmp_path)).ranges("m", "b" * 64, embed, None)  # another version
    assert len(built) == 2


def test_a_calibration_from_before_the_search_record_keeps_its_vectors_and_gains_the_record(
    tmp_path: Path,
) -> None:
    """An index quantized with a version's ranges must stay valid across the upgrade that added the record."""
    built = []

    def embed(texts: list[str], prompt: str | None) -> np.ndarray:
        if texts == calibration_texts():
            built.append(len(texts))
        return CALIBRATION[: len(texts)]

    first = Calibrations(ArtifactStore(tmp_path))
    before = first.ranges("m", "d" * 64, embed, None)
    assert wait_for(lambda: first.retrieval("m", "d" * 64))  # measured on a thread of its own
    for record in (tmp_path / "artifacts").glob("m-*-compressed-retrieval-*"):
        shutil.rmtree(record)  # as a data directory calibrated by the release before the record
    upgraded = Calibrations(ArtifactStore(tmp_path))
    assert upgraded.retrieval("m", "d" * 64) is None
    assert np.array_equal(upgraded.ranges("m", "d" * 64, embed, None), before)
    assert built == [len(calibration_texts())]  # the vectors were read back, not embedded again
    assert wait_for(lambda: upgraded.retrieval("m", "d" * 64))
    assert set(upgraded.retrieval("m", "d" * 64)) == {"int8", "uint8", "binary", "ubinary"}


def test_the_search_record_is_measured_without_holding_up_the_ranges(tmp_path: Path) -> None:
    """The first int8 request needs only the ranges; the search sample is hundreds of texts more."""
    sample_released = threading.Event()

    def embed(texts: list[str], prompt: str | None) -> np.ndarray:
        if texts != calibration_texts():
            sample_released.wait(timeout=10)  # the measurement's own embedding, held up
        return CALIBRATION[: len(texts)]

    calibrations = Calibrations(ArtifactStore(tmp_path))
    calibrations.ranges("m", "e" * 64, embed, None)
    assert calibrations.retrieval("m", "e" * 64) is None  # answered while the measurement waits
    sample_released.set()
    assert wait_for(lambda: calibrations.retrieval("m", "e" * 64))


def test_ranges_for_fewer_dimensions_come_from_the_cut_renormalised_calibration(tmp_path: Path) -> None:
    calibrations = Calibrations(ArtifactStore(tmp_path))
    ranges = calibrations.ranges("m", "c" * 64, lambda texts, _: CALIBRATION[: len(texts)], 8)
    used = CALIBRATION[: len(calibration_texts())]
    assert np.allclose(ranges, ranges_of(l2_normalize(used[:, :8])))

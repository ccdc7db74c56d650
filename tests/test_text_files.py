"""`read_utf8`: UTF-8 (with or without a byte-order mark) reads as text; anything else names file, line, column
and byte in the caller's error type, for every reader that uses it (CSV lists included)."""

from __future__ import annotations

import pytest

from trainers.data_policy import BadSamples, DataError
from trainers.errors import RecipeError
from trainers.text_files import read_utf8


def test_utf8_with_and_without_bom(tmp_path):
    path = tmp_path / "a.json"
    path.write_bytes('\ufeff{"é": 1}'.encode())
    assert read_utf8(path, DataError) == '{"é": 1}'
    path.write_text('{"é": 1}', encoding="utf-8")
    assert read_utf8(path, DataError) == '{"é": 1}'


def test_latin1_names_line_column_byte_and_key(tmp_path):
    path = tmp_path / "a.yaml"
    path.write_bytes("training:\n  name: caf\xe9\n".encode("latin-1"))
    with pytest.raises(RecipeError) as error:
        read_utf8(path, RecipeError, "--config")
    message = str(error.value)
    assert message.startswith(f"{path}:2: not UTF-8 text (--config): byte 0xe9 at column 12")
    assert "'name: café'" in message and "iconv -f latin1 -t utf-8" in message


def test_classification_csv_in_latin1_is_one_data_error(tmp_path):
    from trainers.tasks.classification.data import _read_csv

    path = tmp_path / "list.csv"
    path.write_bytes("image,label\nx.png,caf\xe9\n".encode("latin-1"))
    with pytest.raises(DataError, match=r"list\.csv:2: not UTF-8 text \(data.train\)"):
        _read_csv(path, "data.train", tmp_path, BadSamples("x"))

"""`datasets` sources: save_to_disk / imagefolder / JSON / CSV, lazy decoding, column errors, no Hub."""

from __future__ import annotations

import itertools
import json
import pickle
import shutil
import time
from pathlib import Path

import datasets
import numpy as np
import pyarrow as pa
import pytest
from PIL import Image

from trainers import hub_probe
from trainers.data.sources import (
    Columns,
    DatasetNotAvailableError,
    DatasetSource,
    SourceDataset,
    StreamingSourceDataset,
    load_source,
)
from trainers.errors import RecipeError, UserFacingError

SHAPES = Path(__file__).resolve().parents[1] / "data" / "shapes"
N_TRAIN, N_VAL = 24, 8
BLOB = 200_000  # bytes of an unmapped column per row: must never be read into memory


def _captions(split: str, n: int) -> list[tuple[str, str]]:
    return list(json.loads((SHAPES / f"{split}.json").read_text()).items())[:n]


def _split(items: list[tuple[str, str]]) -> datasets.Dataset:
    features = datasets.Features(
        {
            "image": datasets.Image(),
            "text": datasets.Value("string"),
            "shape": datasets.ClassLabel(names=["circle", "square", "triangle"]),
            "objects": {
                "bbox": datasets.List(datasets.List(datasets.Value("float32"), length=4)),
                "category": datasets.List(datasets.Value("int64")),
            },
            "blob": datasets.Value("binary"),
        }
    )
    rows = {
        "image": [str(SHAPES / "images" / name) for name, _ in items],
        "text": [caption for _, caption in items],
        "shape": [i % 3 for i in range(len(items))],
        "objects": [
            {"bbox": [[1, 2, 11, 12], [20, 20, 40, 44]], "category": [i, i + 1]} for i in range(len(items))
        ],
        "blob": [bytes([i % 256]) * BLOB for i in range(len(items))],
    }
    return datasets.Dataset.from_dict(rows, features=features)


@pytest.fixture(scope="module")
def saved(tmp_path_factory) -> Path:
    """A DatasetDict built offline from data/shapes and written with save_to_disk (images embedded)."""
    directory = tmp_path_factory.mktemp("saved") / "shapes"
    datasets.disable_progress_bars()
    datasets.DatasetDict(
        {"train": _split(_captions("train", N_TRAIN)), "validation": _split(_captions("val", N_VAL))}
    ).save_to_disk(str(directory))
    return directory


CAPTION_COLUMNS = Columns(
    image="image", caption="text", label="shape", boxes="objects.bbox", box_labels="objects.category"
)


@pytest.fixture
def decodes(monkeypatch) -> list[int]:
    """Counts `datasets` image decodes."""
    calls: list[int] = []
    original = datasets.features.image.Image.decode_example

    def counting(self, value, token_per_repo_id=None):
        calls.append(1)
        return original(self, value, token_per_repo_id=token_per_repo_id)

    monkeypatch.setattr(datasets.features.image.Image, "decode_example", counting)
    return calls


def test_saved_dataset_yields_mapped_keys(saved: Path) -> None:
    train = load_source(DatasetSource("disk", str(saved), columns=CAPTION_COLUMNS))
    val = load_source(DatasetSource("disk", str(saved), split="validation", columns=CAPTION_COLUMNS))
    assert isinstance(train, SourceDataset) and (len(train), len(val)) == (N_TRAIN, N_VAL)
    item = train[3]
    assert set(item) == {"image", "caption", "label", "boxes", "box_labels"}
    name, caption = _captions("train", N_TRAIN)[3]
    assert item["caption"] == caption and item["label"] == 0
    assert isinstance(item["image"], Image.Image) and item["image"].mode == "RGB"
    with Image.open(SHAPES / "images" / name) as original:
        assert item["image"].tobytes() == original.convert("RGB").tobytes()
    np.testing.assert_array_equal(item["boxes"], [[1, 2, 11, 12], [20, 20, 40, 44]])
    assert item["box_labels"] == [3, 4]
    assert val[0]["caption"] == _captions("val", 1)[0][1]
    assert train.label_names == ["circle", "square", "triangle"]
    copy = pickle.loads(pickle.dumps(train))  # what a DataLoader worker receives
    assert copy[3]["caption"] == caption and copy[3]["image"].tobytes() == item["image"].tobytes()


def test_images_are_decoded_only_when_an_item_is_accessed(saved: Path, decodes: list[int]) -> None:
    before = pa.total_allocated_bytes()
    train = load_source(DatasetSource("disk", str(saved), columns=CAPTION_COLUMNS))
    assert decodes == []  # loading decoded nothing
    assert isinstance(train.table.data, datasets.table.MemoryMappedTable)  # rows stay on disk
    assert "blob" not in train.table.column_names  # unmapped columns are not even selected
    train[5]
    assert len(decodes) == 1
    train[5], train[6]
    assert len(decodes) == 3  # one decode per access, no cache of decoded images
    # the 24 x 200 kB blob column (4.8 MB) and the images were never copied into Arrow memory
    assert pa.total_allocated_bytes() - before < BLOB


def test_streaming_reads_rows_as_it_goes(saved: Path, decodes: list[int]) -> None:
    stream = load_source(DatasetSource("disk", str(saved), columns=CAPTION_COLUMNS, streaming=True))
    assert isinstance(stream, StreamingSourceDataset)
    first = list(itertools.islice(iter(stream), 3))
    assert [item["caption"] for item in first] == [c for _, c in _captions("train", 3)]
    assert len(decodes) == 3


def test_imagefolder_directory(tmp_path: Path) -> None:
    names = sorted(p.name for p in (SHAPES / "images").glob("train_*.png"))[:9]
    for i, name in enumerate(names):
        folder = tmp_path / "folder" / ("circle", "square", "star")[i % 3]
        folder.mkdir(parents=True, exist_ok=True)
        shutil.copy(SHAPES / "images" / name, folder / name)
    source = DatasetSource(
        "imagefolder",
        str(tmp_path / "folder"),
        columns=Columns(label="label"),
        cache_dir=str(tmp_path / "cache"),
    )
    ds = load_source(source)
    assert len(ds) == 9 and ds.label_names == ["circle", "square", "star"]
    labels = sorted((ds[i]["label"], ds[i]["image"].size) for i in range(9))
    assert [label for label, _ in labels] == [0, 0, 0, 1, 1, 1, 2, 2, 2]
    with pytest.raises(RecipeError, match=r"data\.source\.split='validation'.*its splits are: train"):
        load_source(
            DatasetSource(
                "imagefolder", str(tmp_path / "folder"), split="validation", cache_dir=str(tmp_path / "cache")
            )
        )


def test_json_and_csv_files_with_image_names(tmp_path: Path) -> None:
    rows = [{"file": name, "text": caption} for name, caption in _captions("train", 6)]
    (tmp_path / "train.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (tmp_path / "train.csv").write_text("file,text\n" + "".join(f"{r['file']},{r['text']}\n" for r in rows))
    for kind, file in (("json", "train.jsonl"), ("csv", "train.csv")):
        source = DatasetSource(
            kind,
            str(tmp_path / file),
            columns=Columns(image="file", caption="text"),
            image_dir=str(SHAPES / "images"),
            cache_dir=str(tmp_path / "cache"),
        )
        ds = load_source(source, key="data.train_source")
        assert len(ds) == 6 and ds[2]["caption"] == rows[2]["text"]
        assert ds[2]["image"].size == Image.open(SHAPES / "images" / rows[2]["file"]).size
    # a missing image file is a DataError naming the file, the row and the key
    (tmp_path / "bad.jsonl").write_text(json.dumps({"file": "ghost.png", "text": "x"}) + "\n")
    bad = load_source(
        DatasetSource(
            "json",
            str(tmp_path / "bad.jsonl"),
            columns=Columns(image="file"),
            image_dir=str(SHAPES / "images"),
            cache_dir=str(tmp_path / "cache"),
        ),
        key="data.train_source",
    )
    with pytest.raises(
        UserFacingError, match=r"ghost\.png: cannot read the image.*row 0 of data\.train_source"
    ):
        bad[0]


def test_missing_column_names_the_key_and_lists_the_columns(saved: Path) -> None:
    source = DatasetSource("disk", str(saved), columns=Columns(image="image", caption="caption"))
    with pytest.raises(RecipeError) as info:
        load_source(source, key="data.train_source")
    message = str(info.value)
    assert "data.train_source.columns.caption='caption'" in message
    assert "has no column 'caption'" in message
    assert "its columns are: image, text, shape, objects, blob" in message
    with pytest.raises(
        RecipeError, match=r"column 'objects' .* has no field 'boxes'; its fields are: bbox, category"
    ):
        load_source(DatasetSource("disk", str(saved), columns=Columns(boxes="objects.boxes")))


def test_bad_disk_path_and_split(saved: Path, tmp_path: Path) -> None:
    with pytest.raises(DatasetNotAvailableError, match="does not exist.*save_to_disk"):
        load_source(DatasetSource("disk", str(tmp_path / "nope")))
    (tmp_path / "plain").mkdir()
    with pytest.raises(DatasetNotAvailableError, match="is not a directory written by save_to_disk"):
        load_source(DatasetSource("disk", str(tmp_path / "plain")))
    with pytest.raises(RecipeError, match="has no split 'test'; its splits are: train, validation"):
        load_source(DatasetSource("disk", str(saved), split="test"))


def _no_hub_message_checks(message: str, name: str) -> None:
    for needle in (
        f"dataset {name!r}",
        "cannot be reached",
        f"datasets.load_dataset({name!r}).save_to_disk(DIR)",
        "data.source.kind=disk",
        "HF_DATASETS_CACHE",
        "HF_HUB_OFFLINE=1",
    ):
        assert needle in message, needle


def test_hub_dataset_without_a_reachable_hub_fails_at_once(monkeypatch) -> None:
    """No network here: the probe says so in well under a second, instead of datasets' ~24 s of retries."""
    for name in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_DATASETS_OFFLINE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_OFFLINE", False)
    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(hub_probe, "hub_reachable", lambda: False)
    called = []
    monkeypatch.setattr(datasets, "load_dataset", lambda *a, **k: called.append(a))
    start = time.monotonic()
    with pytest.raises(DatasetNotAvailableError) as info:
        load_source(DatasetSource("hub", "trainers-tests/no-such-dataset"))
    assert time.monotonic() - start < 1.0 and called == []
    _no_hub_message_checks(str(info.value), "trainers-tests/no-such-dataset")
    assert info.value.exit_code == 2


def test_hub_dataset_in_offline_mode_uses_only_the_cache(monkeypatch, tmp_path: Path) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", True)
    start = time.monotonic()
    with pytest.raises(DatasetNotAvailableError) as info:
        load_source(DatasetSource("hub", "trainers-tests/no-such-dataset", cache_dir=str(tmp_path)))
    assert time.monotonic() - start < 5.0
    message = str(info.value)
    _no_hub_message_checks(message, "trainers-tests/no-such-dataset")
    assert "HF offline mode is on" in message and "datasets said:" in message


def test_the_probe_itself_reports_no_hub_here_quickly(monkeypatch) -> None:
    """This machine has no route to the Hub: the real probe answers False within its timeout."""
    monkeypatch.setattr(hub_probe, "HUB_PROBE_TIMEOUT_S", 3.0)
    start = time.monotonic()
    reachable = hub_probe.hub_reachable("https://trainers-tests.invalid")
    assert not reachable and time.monotonic() - start < 3.5

"""The data of a fine-tuning or evaluation run: the manifest and its splits, and the target column.

`discovr-finetune` and `discovr-eval` share these options ([`DataSelection`], the base of both configs), the
loading of the three splits ([`load_splits`]) and the targets ([`attach_targets`]).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal, get_args

from datasets import ClassLabel, Dataset, DatasetDict

from ..cli import InputError, argument
from ..data import load_echonet_dynamic, load_echonet_pediatric, load_video_csv


logger = logging.getLogger(__name__)

DataFormat = Literal["echonet_dynamic", "echonet_pediatric", "csv"]
DATA_FORMATS = get_args(DataFormat)
SPLITS = ("train", "validation", "test")
Task = Literal["lvef", "classification"]
TASKS = get_args(Task)
TARGET_COLUMN = "target"
NORMAL, ABNORMAL = "Normal", "Abnormal"


@dataclass(kw_only=True)
class DataSelection:
    """Which videos a run uses: the `data` options that `discovr-finetune` and `discovr-eval` share."""

    data_root: str = argument(help="Dataset folder (EchoNet layout, or the root of CSV paths).")
    data_format: DataFormat = argument("echonet_dynamic", help="Manifest format.")
    pediatric_view: Literal["A4C", "PSAX"] = argument("A4C", help="EchoNet-Pediatric view.")
    test_fold: int = argument(0, help="EchoNet-Pediatric test fold (validation is the next fold).")
    train_manifest: str | None = argument(None, help="DISCOVR CSV of the train split (--data_format csv).")
    validation_manifest: str | None = argument(None, help="DISCOVR CSV of the validation split (--data_format csv).")
    test_manifest: str | None = argument(None, help="DISCOVR CSV of the test split (--data_format csv).")
    max_train_videos: int | None = argument(None, help="Use only the first N training videos.")
    max_eval_videos: int | None = argument(None, help="Use only the first N validation and N test videos.")

    def load_splits(self) -> DatasetDict:
        """The train / validation / test splits these options select (see [`load_splits`])."""
        return load_splits(
            self.data_format,
            self.data_root,
            pediatric_view=self.pediatric_view,
            test_fold=self.test_fold,
            manifests={"train": self.train_manifest, "validation": self.validation_manifest, "test": self.test_manifest},
            max_train_videos=self.max_train_videos,
            max_eval_videos=self.max_eval_videos,
        )


def load_splits(
    data_format: str,
    data_root: str | os.PathLike,
    *,
    pediatric_view: str = "A4C",
    test_fold: int = 0,
    manifests: dict[str, str | None] | None = None,
    max_train_videos: int | None = None,
    max_eval_videos: int | None = None,
) -> DatasetDict:
    """
    train / validation / test `DatasetDict` from the loaders of `discovr.data`, optionally capped.

    Args:
        data_format: `echonet_dynamic`, `echonet_pediatric` or `csv`.
        data_root: the dataset folder (for `csv`, the root of the manifest paths).
        pediatric_view: EchoNet-Pediatric view.
        test_fold: EchoNet-Pediatric test fold.
        manifests: for `csv`, one DISCOVR CSV per split (`train`, `validation`, `test`).
        max_train_videos: keep only the first N training videos.
        max_eval_videos: keep only the first N validation and N test videos.
    """
    if data_format == "echonet_dynamic":
        splits = load_echonet_dynamic(data_root)
    elif data_format == "echonet_pediatric":
        splits = load_echonet_pediatric(data_root, view=pediatric_view, test_fold=test_fold)
    elif data_format == "csv":
        manifests = manifests or {}
        missing = [f"--{split}_manifest" for split in SPLITS if manifests.get(split) is None]
        if missing:
            raise InputError(f"--data_format csv needs {', '.join(missing)} (one DISCOVR CSV per split)")
        splits = load_video_csv({split: manifests[split] for split in SPLITS}, data_root)
    else:
        raise InputError(f"--data_format must be one of {DATA_FORMATS}, got {data_format!r}")
    for split in SPLITS:
        if split not in splits or len(splits[split]) == 0:
            raise InputError(f"The {split} split of {data_root} ({data_format}) is empty")
    caps = {"train": max_train_videos, "validation": max_eval_videos, "test": max_eval_videos}
    for split, cap in caps.items():
        if cap is not None and cap < len(splits[split]):
            logger.info("Using the first %d of %d %s videos", cap, len(splits[split]), split)
            splits[split] = splits[split].select(range(cap))
    return splits


def _with_targets(columns: dict[str, tuple[Dataset, list]], convert: Callable[[Any], Any]) -> DatasetDict:
    """Each split with `convert(value)` of its label column added as the `target` column."""
    return DatasetDict(
        {
            split: dataset.add_column(TARGET_COLUMN, [convert(value) for value in values])
            for split, (dataset, values) in columns.items()
        }
    )


def attach_targets(
    splits: DatasetDict, task: str, label_column: str | None = None, abnormal_below: float | None = None
) -> tuple[DatasetDict, dict[int, str]]:
    """
    Add the training target as column `target` and return the label names (`id2label`).

    `lvef` regresses `ef` (or `label_column`). `classification` uses `label_column`: a `ClassLabel` keeps its
    names, strings or integers become classes in sorted order (from the training split), and a numeric column
    with `abnormal_below=T` becomes `Normal` (>= T) / `Abnormal` (< T), e.g. EF < 50.
    """
    if task not in TASKS:
        raise InputError(f"--task must be one of {TASKS}, got {task!r}")
    column = label_column or ("ef" if task == "lvef" else None)
    if column is None:
        raise InputError(
            "--task classification needs --label_column (e.g. 'label' for a DISCOVR CSV, or 'ef' with "
            "--abnormal_below 50)"
        )
    for split, dataset in splits.items():
        if column not in dataset.column_names:
            raise InputError(f"Label column {column!r} is not in the {split} split (columns: {dataset.column_names})")
    columns = {split: (dataset, list(dataset[column])) for split, dataset in splits.items()}
    feature = splits["train"].features[column]
    numeric = getattr(feature, "dtype", None) in ("float16", "float32", "float64", "int8", "int16", "int32", "int64")

    if task == "lvef":
        if not numeric or isinstance(feature, ClassLabel):
            raise InputError(f"--task lvef needs a numeric label column; {column!r} is {feature}")
        return _with_targets(columns, float), {0: "LVEF"}
    if abnormal_below is not None:
        if not numeric or isinstance(feature, ClassLabel):
            raise InputError(f"--abnormal_below needs a numeric label column; {column!r} is {feature}")
        threshold = float(abnormal_below)
        return _with_targets(columns, lambda value: int(value < threshold)), {0: NORMAL, 1: ABNORMAL}
    if isinstance(feature, ClassLabel):
        return _with_targets(columns, int), dict(enumerate(feature.names))
    if str(feature.dtype).startswith("float"):
        raise InputError(f"Label column {column!r} holds floats; classify it with --abnormal_below T, or use --task lvef")
    classes = sorted(set(splits["train"][column]))
    index = {name: i for i, name in enumerate(classes)}
    for split in ("validation", "test"):
        unseen = sorted(set(splits[split][column]) - index.keys(), key=str)
        if unseen:
            raise InputError(f"The {split} split has classes absent from the training split: {unseen}")
    return _with_targets(columns, index.__getitem__), {i: str(name) for i, name in enumerate(classes)}


__all__ = [
    "ABNORMAL",
    "DATA_FORMATS",
    "DataFormat",
    "DataSelection",
    "NORMAL",
    "TARGET_COLUMN",
    "TASKS",
    "Task",
    "attach_targets",
    "load_splits",
]

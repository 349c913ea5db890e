"""The paper's frozen-encoder protocols: kNN classification, kNN anomaly detection and linear probes.

    python -m discovr.training.evaluate_representations --model_name_or_path runs/discovr/encoder \
        --data_root data/EchoNet-Dynamic --output_dir runs/eval

One CLS feature per video (averaged over `--clips`) is extracted once per split, batched, and cached as
safetensors keyed by the weights, the videos and the clip settings. The training split is the kNN memory and the
probes' training set, the validation split only chooses the probes' regularisation, and the test split is scored
(the reference's kNN scored its validation CSV as the test set; DESIGN §3 item 7).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import transformers
from numpy.typing import ArrayLike

from ..clips import check_clip_mode
from ..metrics import binary_auroc, classification_metrics, regression_metrics
from ..modeling_discovr import DiscovrModel
from ..video_processing_discovr import DiscovrVideoProcessor
from .data_selection import ABNORMAL, NORMAL, TARGET_COLUMN, DataSelection, add_data_arguments, attach_targets
from .features import cached_features
from .presets import model_processor


logger = logging.getLogger(__name__)

PROTOCOLS = ("knn", "anomaly", "linear", "ridge")
LOGISTIC_CS = (0.001, 0.01, 0.1, 1.0, 10.0)
RIDGE_ALPHAS = (0.1, 1.0, 10.0, 100.0, 1000.0)


def _normalize(features: ArrayLike) -> torch.Tensor:
    features = torch.as_tensor(np.asarray(features), dtype=torch.float32)
    if features.ndim != 2:
        raise ValueError(f"Features must be (num_videos, dim), got shape {tuple(features.shape)}")
    return torch.nn.functional.normalize(features, dim=1)


def _top_k_similarities(memory: ArrayLike, queries: ArrayLike, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Cosine similarities and memory indices of each query's `k` nearest memory rows (fewer if memory is small)."""
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    memory, queries = _normalize(memory), _normalize(queries)
    if memory.shape[1] != queries.shape[1]:
        raise ValueError(f"Memory features have dim {memory.shape[1]} but queries have {queries.shape[1]}")
    if memory.shape[0] == 0:
        raise ValueError("The kNN memory is empty")
    return (queries @ memory.T).topk(min(k, memory.shape[0]), dim=1)


def knn_predict(
    train_features: ArrayLike,
    train_labels: ArrayLike,
    query_features: ArrayLike,
    num_classes: int,
    k: int = 10,
    temperature: float = 0.07,
) -> tuple[np.ndarray, np.ndarray]:
    """
    Weighted kNN on L2-normalised features, as in DINO and the paper: each of the `k` nearest training videos
    votes for its class with weight `exp(cosine / temperature)`.

    Returns the predicted class per query and the vote totals `(num_queries, num_classes)`.
    """
    labels = torch.as_tensor(np.asarray(train_labels), dtype=torch.long)
    if labels.ndim != 1 or labels.shape[0] != np.asarray(train_features).shape[0]:
        raise ValueError(
            f"train_labels must be 1-D with one label per training feature, got shape {tuple(labels.shape)} for "
            f"{np.asarray(train_features).shape[0]} features"
        )
    if labels.min() < 0 or labels.max() >= num_classes:
        raise ValueError(f"train_labels must lie in [0, {num_classes}), got [{labels.min()}, {labels.max()}]")
    similarities, indices = _top_k_similarities(train_features, query_features, k)
    weights = (similarities / temperature).exp()
    votes = torch.zeros(similarities.shape[0], num_classes).scatter_add_(1, labels[indices], weights)
    return votes.argmax(dim=1).numpy(), votes.numpy()


def knn_anomaly_scores(normal_features: ArrayLike, query_features: ArrayLike, k: int = 10) -> np.ndarray:
    """
    Anomaly score of each query: 1 - the mean cosine similarity to its `k` nearest normal training videos.

    A video unlike every normal heart scores high; AUROC of this score against the Abnormal label is the paper's
    zero-shot anomaly detection.
    """
    similarities, _ = _top_k_similarities(normal_features, query_features, k)
    return (1.0 - similarities.mean(dim=1)).numpy()


def linear_probe_classification(
    train: tuple[ArrayLike, ArrayLike],
    validation: tuple[ArrayLike, ArrayLike],
    test: tuple[ArrayLike, ArrayLike],
    num_classes: int,
    cs: tuple[float, ...] = LOGISTIC_CS,
    seed: int = 0,
) -> dict[str, Any]:
    """
    Logistic regression on standardised features: `C` chosen by validation macro-F1, scores on the test split.

    Each argument is `(features, labels)`. Returns test accuracy, balanced accuracy and macro-F1, the chosen `C`
    and the validation macro-F1 of every `C`.
    """
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    classes = list(range(num_classes))
    fits = {}
    for c in cs:
        probe = make_pipeline(StandardScaler(), LogisticRegression(C=c, max_iter=5000, random_state=seed))
        probe.fit(np.asarray(train[0]), np.asarray(train[1]))
        fits[c] = (probe, classification_metrics(probe.predict(np.asarray(validation[0])), validation[1], classes))
    best_c = max(cs, key=lambda c: fits[c][1]["macro_f1"])
    test_metrics = classification_metrics(fits[best_c][0].predict(np.asarray(test[0])), test[1], classes)
    return {**test_metrics, "C": best_c, "validation_macro_f1": {str(c): fits[c][1]["macro_f1"] for c in cs}}


def linear_probe_regression(
    train: tuple[ArrayLike, ArrayLike],
    validation: tuple[ArrayLike, ArrayLike],
    test: tuple[ArrayLike, ArrayLike],
    alphas: tuple[float, ...] = RIDGE_ALPHAS,
) -> dict[str, Any]:
    """
    Ridge regression (e.g. of LVEF) on standardised features: `alpha` chosen by validation MAE.

    Returns the test MAE, RMSE, R² and HFrEF AUROC, the chosen `alpha`, and the test MAE of predicting the
    training mean for every video (the baseline a useful representation must beat).
    """
    from sklearn.linear_model import Ridge
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    fits = {}
    for alpha in alphas:
        probe = make_pipeline(StandardScaler(), Ridge(alpha=alpha))
        probe.fit(np.asarray(train[0]), np.asarray(train[1], dtype=np.float64))
        error = np.abs(probe.predict(np.asarray(validation[0])) - np.asarray(validation[1], dtype=np.float64))
        fits[alpha] = (probe, float(error.mean()))
    best_alpha = min(alphas, key=lambda alpha: fits[alpha][1])
    targets = np.asarray(test[1], dtype=np.float64)
    metrics = regression_metrics(fits[best_alpha][0].predict(np.asarray(test[0])), targets)
    baseline = float(np.abs(targets - np.mean(np.asarray(train[1], dtype=np.float64))).mean())
    return {
        **metrics,
        "alpha": best_alpha,
        "train_mean_baseline_mae": baseline,
        "validation_mae": {str(alpha): fits[alpha][1] for alpha in alphas},
    }


@dataclass(kw_only=True)
class EvalConfig(DataSelection):
    """The `discovr-eval` options (see `--help`)."""

    model_name_or_path: str
    output_dir: str
    protocols: tuple[str, ...] = PROTOCOLS
    label_column: str | None = None
    abnormal_below: float | None = None
    normal_class: str = NORMAL
    regression_column: str = "ef"
    k: int = 10
    temperature: float = 0.07
    clips: str = "center"
    frame_stride: int | None = None
    batch_size: int = 16
    num_workers: int = 2
    cache_dir: str | None = None
    device: str | None = None
    seed: int = 0
    disable_tqdm: bool = False


def load_encoder(model_dir: str | os.PathLike) -> DiscovrModel:
    """A saved `DiscovrModel`, or the encoder of a `DiscovrForPreTraining` / classification directory."""
    # Transformers lists every pretraining-only weight it skips; a missing encoder weight is what matters here.
    verbosity = transformers.logging.get_verbosity()
    transformers.logging.set_verbosity_error()
    try:
        encoder, info = DiscovrModel.from_pretrained(model_dir, output_loading_info=True)
    finally:
        transformers.logging.set_verbosity(verbosity)
    if info["missing_keys"]:
        missing = sorted(info["missing_keys"])
        raise ValueError(
            f"{model_dir} does not hold a complete DISCOVR encoder: {len(missing)} weights are missing "
            f"(e.g. {', '.join(missing[:5])})"
        )
    return encoder.eval()


def _default_labels(config: EvalConfig) -> tuple[str, float | None]:
    """Label column and threshold: `label` for DISCOVR CSVs; EF < 50 is Abnormal for the EchoNet formats."""
    if config.label_column is not None:
        return config.label_column, config.abnormal_below
    if config.data_format == "csv":
        return "label", config.abnormal_below
    return "ef", 50.0 if config.abnormal_below is None else config.abnormal_below


def evaluate_representations(config: EvalConfig) -> dict[str, Any]:
    """Run the selected protocols on the test split; writes and returns `representation_metrics.json`'s content."""
    unknown = sorted(set(config.protocols) - set(PROTOCOLS))
    if unknown:
        raise ValueError(f"Unknown protocols {unknown}; choose from {PROTOCOLS}")
    check_clip_mode(config.clips)
    output_dir = Path(config.output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    device = torch.device(config.device or ("cuda" if torch.cuda.is_available() else "cpu"))

    splits = config.load_splits()
    label_column, abnormal_below = _default_labels(config)
    needs_classes = bool({"knn", "anomaly", "linear"} & set(config.protocols))
    id2label: dict[int, str] = {}
    labelled = splits
    if needs_classes:
        labelled, id2label = attach_targets(splits, "classification", label_column, abnormal_below)
    if "anomaly" in config.protocols and config.normal_class not in id2label.values():
        raise ValueError(f"--normal_class {config.normal_class!r} is not one of the classes {list(id2label.values())}")
    if "ridge" in config.protocols and config.regression_column not in splits["train"].column_names:
        raise ValueError(
            f"The ridge protocol regresses {config.regression_column!r}, which the data lacks "
            f"(columns: {splits['train'].column_names}); set --regression_column or drop ridge from --protocols"
        )

    encoder = load_encoder(config.model_name_or_path).to(device)
    processor: DiscovrVideoProcessor = model_processor(encoder.config, config.model_name_or_path, config.frame_stride)
    cache_dir = Path(config.cache_dir) if config.cache_dir else output_dir / "features"
    features = {
        split: cached_features(
            encoder, config.model_name_or_path, processor, list(splits[split]["video"]), cache_dir, split,
            mode=config.clips, batch_size=config.batch_size, num_workers=config.num_workers,
            progress=not config.disable_tqdm,
        ).numpy()
        for split in ("train", "validation", "test")
    }

    results: dict[str, Any] = {
        "model": str(config.model_name_or_path),
        "clips": config.clips,
        "frame_stride": processor.frame_stride,
        "videos": {split: len(splits[split]) for split in splits},
    }
    if needs_classes:
        labels = {split: np.asarray(labelled[split][TARGET_COLUMN]) for split in ("train", "validation", "test")}
        results["classes"] = id2label
        num_classes = len(id2label)
        if "knn" in config.protocols:
            predicted, _ = knn_predict(
                features["train"], labels["train"], features["test"], num_classes, config.k, config.temperature
            )
            results["knn"] = {
                **classification_metrics(predicted, labels["test"], list(range(num_classes))),
                "k": config.k,
                "temperature": config.temperature,
            }
        if "anomaly" in config.protocols:
            results["anomaly"] = _anomaly(config, features, labels, id2label)
        if "linear" in config.protocols:
            results["linear"] = linear_probe_classification(
                (features["train"], labels["train"]),
                (features["validation"], labels["validation"]),
                (features["test"], labels["test"]),
                num_classes,
                seed=config.seed,
            )
    if "ridge" in config.protocols:
        targets = {split: np.asarray(splits[split][config.regression_column], dtype=np.float64) for split in splits}
        results["ridge"] = {
            "target": config.regression_column,
            **linear_probe_regression(
                (features["train"], targets["train"]),
                (features["validation"], targets["validation"]),
                (features["test"], targets["test"]),
            ),
        }
    (output_dir / "representation_metrics.json").write_text(json.dumps(results, indent=2, default=float))
    return results


def _anomaly(
    config: EvalConfig, features: dict[str, np.ndarray], labels: dict[str, np.ndarray], id2label: dict[int, str]
) -> dict[str, Any]:
    normal = list(id2label.values()).index(config.normal_class)
    normal_memory = features["train"][labels["train"] == normal]
    if len(normal_memory) == 0:
        raise ValueError(f"The training split has no {config.normal_class!r} videos to serve as the normal memory")
    scores = knn_anomaly_scores(normal_memory, features["test"], config.k)
    abnormal = labels["test"] != normal
    return {
        "auroc": binary_auroc(scores, abnormal),
        "normal_class": config.normal_class,
        "normal_memory": int(len(normal_memory)),
        "k": config.k,
    }


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="discovr-eval",
        description=__doc__.split("\n\n")[0],
        epilog=(
            "Writes representation_metrics.json in --output_dir and caches features under --cache_dir. kNN and the "
            "logistic probe report accuracy, balanced accuracy and macro-F1 on the test split; the anomaly protocol "
            "reports the AUROC of Normal vs the other classes; ridge reports MAE, RMSE, R² and the train-mean baseline."
        ),
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--model_name_or_path", required=True,
                        help="Saved encoder: a DiscovrModel, DiscovrForPreTraining or fine-tuned model directory.")
    parser.add_argument("--output_dir", required=True, help="Where representation_metrics.json goes.")
    add_data_arguments(parser)
    labels = parser.add_argument_group("labels")
    labels.add_argument("--label_column", default=None,
                        help="Class column: default 'label' for --data_format csv, else 'ef' (with --abnormal_below).")
    labels.add_argument("--abnormal_below", type=float, default=None,
                        help=f"Make a numeric column binary: below this is {ABNORMAL}, else {NORMAL} "
                             "(default 50 for the EchoNet formats, i.e. EF < 50%%).")
    labels.add_argument("--normal_class", default=NORMAL, help="Class whose training videos form the anomaly memory.")
    labels.add_argument("--regression_column", default="ef", help="Column regressed by the ridge probe.")
    protocol = parser.add_argument_group("protocols")
    protocol.add_argument("--protocols", nargs="+", choices=PROTOCOLS, default=list(PROTOCOLS),
                          help="Protocols to run.")
    protocol.add_argument("--k", type=int, default=10, help="Neighbours for kNN and the anomaly score.")
    protocol.add_argument("--temperature", type=float, default=0.07, help="kNN vote temperature.")
    protocol.add_argument("--seed", type=int, default=0, help="Seed of the logistic probe.")
    features = parser.add_argument_group("features")
    features.add_argument("--clips", default="center",
                          help="Clips averaged into one feature per video: center, all or uniform:K.")
    features.add_argument("--frame_stride", type=int, default=None,
                          help="Step between clip frames (default: the saved processor's, else 3).")
    features.add_argument("--batch_size", type=int, default=16, help="Clips per forward pass.")
    features.add_argument("--num_workers", type=int, default=2, help="Video-decoding worker processes.")
    features.add_argument("--cache_dir", default=None, help="Feature cache (default: OUTPUT_DIR/features).")
    features.add_argument("--device", default=None, help="Torch device (default: cuda if available, else cpu).")
    features.add_argument("--disable_tqdm", action="store_true", help="Hide the progress bars.")
    return parser


def main(argv: list[str] | None = None) -> int:
    """`discovr-eval`."""
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    args.protocols = tuple(args.protocols)
    results = evaluate_representations(EvalConfig(**vars(args)))
    print(json.dumps({name: results[name] for name in PROTOCOLS if name in results}, indent=2, default=float))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

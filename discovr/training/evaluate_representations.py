"""The paper's frozen-encoder protocols: kNN classification, kNN anomaly detection and linear probes.

    python -m discovr.training.evaluate_representations --model_name_or_path runs/discovr/encoder \
        --data_root data/EchoNet-Dynamic --output_dir runs/eval

One feature per video and pooling (the CLS token and the mean of the patch tokens, averaged over `--clips`) is
extracted once per split, batched, and cached as safetensors keyed by the weights, the videos and the clip
settings. The training split is the kNN memory and the probes' training set; the validation split chooses every
setting (pooling, k, feature standardisation, regularisation); the test split is scored once with the chosen
settings. (The reference's kNN scored its validation CSV as the test set; docs/pretraining.md.)
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
import transformers
from numpy.typing import ArrayLike

from ..cli import (
    CLIPS_HELP,
    DiscovrArgumentParser,
    InputError,
    argument,
    clips_argument,
    default_device,
    model_type_of,
    run_console_script,
)
from ..metrics import (
    DEFAULT_NUM_BOOTSTRAP,
    binary_auroc,
    bootstrap_auroc_ci,
    bootstrap_ci,
    bootstrap_macro_f1_ci,
    classification_metrics,
    regression_metrics,
)
from ..modeling_discovr import DiscovrModel
from ..video_processing_discovr import ClipSampling, DiscovrVideoProcessor
from .data_selection import ABNORMAL, NORMAL, TARGET_COLUMN, DataSelection, attach_targets
from .encoders import Encoder, is_pretraining_folder, load_complete, pretraining_encoder
from .features import cached_features
from .presets import model_processor


logger = logging.getLogger(__name__)

PROTOCOLS = ("knn", "anomaly", "linear", "ridge")
K_CANDIDATES = (5, 10, 20)
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
    num_bootstrap: int = 0,
) -> dict[str, Any]:
    """
    Logistic regression on standardised features: `C` chosen by validation macro-F1, scores on the test split.

    Each argument is `(features, labels)`. Returns test accuracy, balanced accuracy and macro-F1 (with its
    bootstrap 95% interval when `num_bootstrap` > 0), the chosen `C` and the validation macro-F1 of every `C`.
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
    predicted = fits[best_c][0].predict(np.asarray(test[0]))
    test_metrics = classification_metrics(predicted, test[1], classes)
    if num_bootstrap:
        test_metrics["macro_f1_95ci"] = list(bootstrap_macro_f1_ci(predicted, test[1], classes, num_bootstrap, seed=seed))
    return {**test_metrics, "C": best_c, "validation_macro_f1": {str(c): fits[c][1]["macro_f1"] for c in cs}}


def linear_probe_regression(
    train: tuple[ArrayLike, ArrayLike],
    validation: tuple[ArrayLike, ArrayLike],
    test: tuple[ArrayLike, ArrayLike],
    alphas: tuple[float, ...] = RIDGE_ALPHAS,
    num_bootstrap: int = 0,
    seed: int = 0,
) -> dict[str, Any]:
    """
    Ridge regression (e.g. of LVEF) on standardised features: `alpha` chosen by validation MAE.

    Returns the test MAE, RMSE, R² and HFrEF AUROC (each with its bootstrap 95% interval when `num_bootstrap` > 0),
    the chosen `alpha`, and the test MAE of predicting the training mean for every video (the baseline a useful
    representation must beat).
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
    predicted = fits[best_alpha][0].predict(np.asarray(test[0]))
    metrics = regression_metrics(predicted, targets)
    if num_bootstrap:
        intervals = bootstrap_ci(predicted, targets, num_bootstrap, seed=seed)
        metrics.update({f"{name}_95ci": list(interval) for name, interval in intervals.items()})
    baseline = float(np.abs(targets - np.mean(np.asarray(train[1], dtype=np.float64))).mean())
    return {
        **metrics,
        "alpha": best_alpha,
        "train_mean_baseline_mae": baseline,
        "validation_mae": {str(alpha): fits[alpha][1] for alpha in alphas},
    }


FeatureSplits = dict[str, dict[str, np.ndarray]]
"""`{pooling: {split: (num_videos, dim) features}}` for the train, validation and test splits."""


def _standardized(features: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Every split z-scored with the training split's statistics.

    An untrained or masked-modelling encoder adds the same large offset to every clip's mean-pooled feature; left
    in, it dominates every cosine and kNN sees all videos as alike.
    """
    mean, std = features["train"].mean(axis=0), features["train"].std(axis=0) + 1e-6
    return {split: (values - mean) / std for split, values in features.items()}


def _knn_candidates(features: FeatureSplits, k_values: tuple[int, ...]):
    for pooling, splits in features.items():
        for standardize in (False, True):
            prepared = _standardized(splits) if standardize else splits
            for k in k_values:
                yield {"pooling": pooling, "standardized": standardize, "k": k}, prepared


def knn_protocol(
    features: FeatureSplits, labels: dict[str, np.ndarray], num_classes: int, k_values: tuple[int, ...] = K_CANDIDATES,
    temperature: float = 0.07, num_bootstrap: int = 0, seed: int = 0,
) -> dict[str, Any]:
    """Weighted kNN classification of the test split; pooling, standardisation and k chosen by validation macro-F1.
    With `num_bootstrap` > 0, the test macro-F1 gets its bootstrap 95% interval."""
    classes = list(range(num_classes))
    best = None
    for settings, prepared in _knn_candidates(features, k_values):
        predicted, _ = knn_predict(prepared["train"], labels["train"], prepared["validation"], num_classes,
                                   settings["k"], temperature)
        score = classification_metrics(predicted, labels["validation"], classes)["macro_f1"]
        if best is None or score > best[0]:
            best = (score, settings, prepared)
    score, settings, prepared = best
    predicted, _ = knn_predict(prepared["train"], labels["train"], prepared["test"], num_classes, settings["k"],
                               temperature)
    metrics = classification_metrics(predicted, labels["test"], classes)
    if num_bootstrap:
        metrics["macro_f1_95ci"] = list(bootstrap_macro_f1_ci(predicted, labels["test"], classes, num_bootstrap, seed=seed))
    return {**metrics, **settings, "temperature": temperature, "validation_macro_f1": score}


def anomaly_protocol(
    features: FeatureSplits, labels: dict[str, np.ndarray], normal: int, k_values: tuple[int, ...] = K_CANDIDATES,
    num_bootstrap: int = 0, seed: int = 0,
) -> dict[str, Any]:
    """AUROC of the kNN anomaly score (the k nearest normal training videos) for "not `normal`" on the test split;
    pooling, standardisation and k chosen by validation AUROC. With `num_bootstrap` > 0, the test AUROC gets its
    bootstrap 95% interval."""
    memory = labels["train"] == normal
    if not memory.any():
        raise InputError("The training split has no normal videos to serve as the anomaly memory")
    best = None
    for settings, prepared in _knn_candidates(features, k_values):
        scores = knn_anomaly_scores(prepared["train"][memory], prepared["validation"], settings["k"])
        auroc = binary_auroc(scores, labels["validation"] != normal)
        if best is None or auroc > best[0]:
            best = (auroc, settings, prepared)
    auroc, settings, prepared = best
    scores = knn_anomaly_scores(prepared["train"][memory], prepared["test"], settings["k"])
    abnormal = labels["test"] != normal
    metrics = {"auroc": binary_auroc(scores, abnormal)}
    if num_bootstrap:
        metrics["auroc_95ci"] = list(bootstrap_auroc_ci(scores, abnormal, num_bootstrap, seed=seed))
    return {**metrics, **settings, "normal_memory": int(memory.sum()), "validation_auroc": auroc}


def linear_protocol(
    features: FeatureSplits, labels: dict[str, np.ndarray], num_classes: int, seed: int = 0, num_bootstrap: int = 0
) -> dict[str, Any]:
    """[`linear_probe_classification`] on each pooling; the pooling with the best validation macro-F1 is reported."""
    fits = {
        pooling: linear_probe_classification(
            *((splits[split], labels[split]) for split in ("train", "validation", "test")), num_classes, seed=seed,
            num_bootstrap=num_bootstrap,
        )
        for pooling, splits in features.items()
    }
    pooling = max(fits, key=lambda name: max(fits[name]["validation_macro_f1"].values()))
    return {**fits[pooling], "pooling": pooling}


def ridge_protocol(
    features: FeatureSplits, targets: dict[str, np.ndarray], num_bootstrap: int = 0, seed: int = 0
) -> dict[str, Any]:
    """[`linear_probe_regression`] on each pooling; the pooling with the lowest validation MAE is reported."""
    fits = {
        pooling: linear_probe_regression(
            *((splits[split], targets[split]) for split in ("train", "validation", "test")),
            num_bootstrap=num_bootstrap, seed=seed,
        )
        for pooling, splits in features.items()
    }
    pooling = min(fits, key=lambda name: min(fits[name]["validation_mae"].values()))
    return {**fits[pooling], "pooling": pooling}


@dataclass(kw_only=True)
class EvalConfig(DataSelection):
    """The `discovr-eval` options, defined once here (see `--help`)."""

    model_name_or_path: str = argument(
        help="Saved encoder: a DiscovrModel, DiscovrForPreTraining or fine-tuned model directory."
    )
    output_dir: str = argument(help="Where representation_metrics.json goes.")
    encoder: Encoder = argument(
        "teacher",
        help="Which video encoder of a DiscovrForPreTraining folder (discovr-pretrain's pretrained/) to evaluate: the "
        "EMA teacher (what encoder/ holds) or the online student.",
    )
    label_column: str | None = argument(
        None, help="Class column: default 'label' for --data_format csv, else 'ef' (with --abnormal_below)."
    )
    abnormal_below: float | None = argument(
        None,
        help=f"Make a numeric column binary: below this is {ABNORMAL}, else {NORMAL} (default 50 for the EchoNet "
        "formats, i.e. EF < 50%%).",
    )
    normal_class: str = argument(NORMAL, help="Class whose training videos form the anomaly memory.")
    regression_column: str = argument("ef", help="Column regressed by the ridge probe.")
    protocols: list[str] = argument(list(PROTOCOLS), help="Protocols to run.", choices=PROTOCOLS)
    k: list[int] = argument(
        list(K_CANDIDATES), help="Neighbours for kNN and the anomaly score; with several, validation chooses."
    )
    temperature: float = argument(0.07, help="kNN vote temperature.")
    seed: int = argument(0, help="Seed of the logistic probe and of the bootstrap.")
    num_bootstrap: int = argument(
        DEFAULT_NUM_BOOTSTRAP,
        help="Bootstrap resamples of the test split for the 95%% intervals of every probe's score (0 skips them).",
    )
    pooling: Literal["auto", "cls", "mean"] = argument(
        "auto",
        help="Feature of each clip: the CLS token, the mean of the patch tokens, or auto (each protocol takes the one "
        "that scores best on validation).",
    )
    clips: ClipSampling = argument(
        ClipSampling("center"), help=CLIPS_HELP + " One feature per video is their mean.", parse=clips_argument
    )
    frame_stride: int | None = argument(
        None, help="Step between clip frames (default: the saved processor's, else 3)."
    )
    batch_size: int = argument(16, help="Clips per forward pass.")
    num_workers: int = argument(2, help="Video-decoding worker processes.")
    cache_dir: str | None = argument(None, help="Feature cache (default: OUTPUT_DIR/features).")
    device: str | None = argument(None, help="Torch device (default: cuda if available, else cpu).")
    disable_tqdm: bool = argument(False, help="Hide the progress bars.")


def load_encoder(model_dir: str | os.PathLike, encoder: str = "teacher") -> torch.nn.Module:
    """A saved `DiscovrModel`, the video `encoder` ("teacher" or "student") of a `DiscovrForPreTraining`, the encoder
    of a classification directory, or another Transformers video encoder (such as a `VideoMAEModel`, for
    comparisons), in eval mode."""
    model_type = model_type_of(model_dir)
    if is_pretraining_folder(model_dir):
        return pretraining_encoder(model_dir, encoder).eval()
    encoder_class = DiscovrModel if model_type == "discovr" else transformers.AutoModel
    encoder, _ = load_complete(encoder_class, model_dir, f"a complete {model_type} encoder")
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
        raise InputError(f"Unknown protocols {unknown}; choose from {PROTOCOLS}")
    try:
        clips = ClipSampling.parse(config.clips)
    except ValueError as error:
        raise InputError(f"--clips: {error}") from None
    output_dir = Path(config.output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    device = torch.device(default_device(config.device))

    splits = config.load_splits()
    label_column, abnormal_below = _default_labels(config)
    needs_classes = bool({"knn", "anomaly", "linear"} & set(config.protocols))
    id2label: dict[int, str] = {}
    labelled = splits
    if needs_classes:
        labelled, id2label = attach_targets(splits, "classification", label_column, abnormal_below)
    if "anomaly" in config.protocols and config.normal_class not in id2label.values():
        raise InputError(f"--normal_class {config.normal_class!r} is not one of the classes {list(id2label.values())}")
    if "ridge" in config.protocols and config.regression_column not in splits["train"].column_names:
        raise InputError(
            f"The ridge protocol regresses {config.regression_column!r}, which the data lacks "
            f"(columns: {splits['train'].column_names}); set --regression_column or drop ridge from --protocols"
        )

    encoder = load_encoder(config.model_name_or_path, config.encoder).to(device)
    processor: DiscovrVideoProcessor = model_processor(encoder.config, config.model_name_or_path, config.frame_stride)
    cache_dir = Path(config.cache_dir) if config.cache_dir else output_dir / "features"
    by_split = {
        split: cached_features(
            encoder, config.model_name_or_path, processor, list(splits[split]["video"]), cache_dir, split,
            clips=clips, batch_size=config.batch_size, num_workers=config.num_workers,
            progress=not config.disable_tqdm,
        )
        for split in ("train", "validation", "test")
    }
    poolings = list(by_split["train"]) if config.pooling == "auto" else [config.pooling]
    missing = sorted(set(poolings) - set(by_split["train"]))
    if missing:
        raise InputError(f"--pooling {config.pooling} is not available for this encoder (it offers {list(by_split['train'])})")
    features = {pooling: {split: by_split[split][pooling].numpy() for split in by_split} for pooling in poolings}

    results: dict[str, Any] = {
        "model": str(config.model_name_or_path),
        "clips": str(clips),
        "frame_stride": processor.frame_stride,
        "videos": {split: len(splits[split]) for split in splits},
    }
    if needs_classes:
        labels = {split: np.asarray(labelled[split][TARGET_COLUMN]) for split in ("train", "validation", "test")}
        results["classes"] = id2label
        num_classes = len(id2label)
        if "knn" in config.protocols:
            results["knn"] = knn_protocol(features, labels, num_classes, tuple(config.k), config.temperature,
                                          config.num_bootstrap, config.seed)
        if "anomaly" in config.protocols:
            normal = list(id2label.values()).index(config.normal_class)
            results["anomaly"] = {
                **anomaly_protocol(features, labels, normal, tuple(config.k), config.num_bootstrap, config.seed),
                "normal_class": config.normal_class,
            }
        if "linear" in config.protocols:
            results["linear"] = linear_protocol(features, labels, num_classes, config.seed, config.num_bootstrap)
    if "ridge" in config.protocols:
        targets = {split: np.asarray(splits[split][config.regression_column], dtype=np.float64) for split in splits}
        results["ridge"] = {
            "target": config.regression_column, **ridge_protocol(features, targets, config.num_bootstrap, config.seed)
        }
    (output_dir / "representation_metrics.json").write_text(json.dumps(results, indent=2, default=float))
    return results


def build_parser() -> DiscovrArgumentParser:
    return DiscovrArgumentParser(
        EvalConfig,
        prog="discovr-eval",
        description=__doc__.split("\n\n")[0],
        epilog=(
            "Writes representation_metrics.json in --output_dir and caches features under --cache_dir. kNN and the "
            "logistic probe report accuracy, balanced accuracy and macro-F1 on the test split; the anomaly protocol "
            "reports the AUROC of Normal vs the other classes; ridge reports MAE, RMSE, R² and the train-mean baseline. "
            "Each test score comes with its bootstrap 95% interval (<metric>_95ci)."
        ),
    )


def main(argv: list[str] | None = None) -> int:
    """`discovr-eval`."""
    parser = build_parser()
    config = parser.parse(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")

    def run() -> int:
        results = evaluate_representations(config)
        print(json.dumps({name: results[name] for name in PROTOCOLS if name in results}, indent=2, default=float))
        return 0

    return run_console_script(parser.prog, run)


if __name__ == "__main__":
    raise SystemExit(main())

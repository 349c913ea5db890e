"""Segmentation overlap metric for `evaluate`: per-structure Dice and IoU, pooled Dice, and bootstrap 95% CIs.

Load it by path, which works offline:

    import evaluate, discovr.metrics
    metric = evaluate.load(str(discovr.metrics.SEGMENTATION_METRIC_PATH))
    metric = discovr.metrics.load_segmentation_metric()  # the same
"""

import datasets
import evaluate
import numpy as np

from discovr.metrics import (
    DEFAULT_IGNORE_INDEX,
    DEFAULT_NUM_BOOTSTRAP,
    SegmentationScores,
    bootstrap_segmentation_ci,
    dice_iou,
    segmentation_metrics,
)


_DESCRIPTION = """
Overlap of predicted and reference segmentation label maps, per structure (e.g. LV cavity, LV myocardium, left
atrium): the mean over samples of the Dice coefficient 2|P∩R| / (|P| + |R|) and of the IoU |P∩R| / |P∪R|, and the
pooled Dice of all samples' pixels together (as EchoNet-Dynamic reports it). Each example is one sample: a frame,
or a whole video reshaped to (T*H, W), which pools its frames into one score.

Reference pixels equal to `ignore_index` are not scored. A structure absent from both maps of a sample has an
undefined (0/0) score there, which is left out of that structure's mean, never counted as 1 or 0.

Each metric also gets a percentile bootstrap confidence interval over samples.
"""

_KWARGS_DESCRIPTION = """
Args:
    predictions (`list` of 2-D integer label maps): predicted labels of each sample.
    references (`list` of 2-D integer label maps): reference labels, each the shape of its prediction.
    labels (`dict` of `str` to `int`, or `list` of `int`): the structures to score, e.g. `{"lv_cavity": 1}`.
    ignore_index (`int`, defaults to 255): reference label of pixels that are not scored; `None` scores all.
    num_bootstrap (`int`, defaults to 10000): bootstrap resamples for the confidence intervals; 0 skips them.
    confidence_level (`float`, defaults to 0.95): coverage of the intervals.
    seed (`int`, *optional*): seed of the bootstrap, for reproducible intervals.

Returns:
    dice_<structure>, iou_<structure> (`float`): means over the samples where the structure is in either map
        (NaN if it is in none);
    pooled_dice_<structure> (`float`): Dice of all samples' pixels pooled;
    <metric>_ci_low, <metric>_ci_high (`float`): interval bounds, when `num_bootstrap > 0`;
    num_samples (`int`): number of samples.

Examples:
    >>> metric = evaluate.load("discovr/metrics/dice")
    >>> results = metric.compute(predictions=[[[1, 1], [0, 0]]], references=[[[1, 0], [0, 0]]],
    ...                          labels={"lv": 1}, num_bootstrap=0)
    >>> round(results["dice_lv"], 4), results["iou_lv"]
    (0.6667, 0.5)
"""

_CITATION = """
@article{ouyang2020video,
  title={Video-based AI for beat-to-beat assessment of cardiac function},
  author={Ouyang, David and He, Bryan and Ghorbani, Amirata and Yuan, Neal and Ebinger, Joseph and
          Langlotz, Curtis P and Heidenreich, Paul A and Harrington, Robert A and Liang, David H and
          Ashley, Euan A and Zou, James Y},
  journal={Nature},
  volume={580},
  pages={252--256},
  year={2020}
}
"""


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class Dice(evaluate.Metric):
    """Per-structure Dice and IoU with bootstrap confidence intervals."""

    def _info(self) -> evaluate.MetricInfo:
        label_map = datasets.Sequence(datasets.Sequence(datasets.Value("int32")))
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation=_CITATION,
            inputs_description=_KWARGS_DESCRIPTION,
            features=datasets.Features({"predictions": label_map, "references": label_map}),
            reference_urls=["https://echonet.github.io/dynamic/", "https://www.creatis.insa-lyon.fr/Challenge/camus/"],
        )

    def _compute(
        self,
        predictions: list[list[list[int]]],
        references: list[list[list[int]]],
        labels: dict[str, int] | list[int] | None = None,
        ignore_index: int | None = DEFAULT_IGNORE_INDEX,
        num_bootstrap: int = DEFAULT_NUM_BOOTSTRAP,
        confidence_level: float = 0.95,
        seed: int | None = None,
    ) -> dict[str, float]:
        if labels is None:
            raise ValueError('`labels` is required: the structures to score, e.g. labels={"lv_cavity": 1}.')
        if num_bootstrap < 0:
            raise ValueError(f"`num_bootstrap` must be >= 0, got {num_bootstrap}.")
        if not predictions:
            raise ValueError("No samples to score: `predictions` is empty.")
        # Samples may differ in size, so each is counted on its own and the counts are joined.
        scores = SegmentationScores.concatenate([
            dice_iou(np.asarray(prediction)[None], np.asarray(reference)[None], labels, ignore_index)
            for prediction, reference in zip(predictions, references, strict=True)
        ])
        results: dict[str, float] = segmentation_metrics(scores)
        if num_bootstrap > 0:
            intervals = bootstrap_segmentation_ci(scores, num_bootstrap, confidence_level, seed)
            for name, (low, high) in intervals.items():
                results[f"{name}_ci_low"] = low
                results[f"{name}_ci_high"] = high
        results["num_samples"] = scores.num_samples
        return results

"""LVEF regression metric for `evaluate`: MAE, RMSE, R², HFrEF AUROC and bootstrap 95% CIs.

Load it by path, which works offline:

    import evaluate, discovr.metrics
    metric = evaluate.load(str(discovr.metrics.LVEF_METRIC_PATH))  # or discovr.metrics.load_lvef_metric()
"""

import datasets
import evaluate

from discovr.metrics import DEFAULT_NUM_BOOTSTRAP, HFREF_THRESHOLD, bootstrap_ci, regression_metrics


_DESCRIPTION = """
Left-ventricular ejection fraction (LVEF, %) regression metrics, as reported by EchoNet-Dynamic:
mean absolute error, root mean squared error and the coefficient of determination R² of predicted vs
true EF, plus the area under the ROC curve for detecting heart failure with reduced EF (HFrEF). For
the AUROC, a video is positive when its reference EF is below `hfref_threshold` (50%) and its score
is the negated prediction, so a lower predicted EF means more likely HFrEF.

Each metric also gets a percentile bootstrap confidence interval over videos. Resamples in which
one HFrEF class is absent (AUROC undefined) are excluded from the AUROC interval only, which is
equivalent to redrawing them; an interval is NaN when no resample is usable.
"""

_KWARGS_DESCRIPTION = """
Args:
    predictions (`list` of `float`): predicted EF in %, one per video.
    references (`list` of `float`): true EF in %, one per video.
    num_bootstrap (`int`, defaults to 10000): bootstrap resamples for the confidence intervals
        (EchoNet-Dynamic uses 10000); 0 skips the intervals.
    confidence_level (`float`, defaults to 0.95): coverage of the intervals.
    seed (`int`, *optional*): seed of the bootstrap, for reproducible intervals.
    hfref_threshold (`float`, defaults to 50.0): EF (%) below which a reference counts as HFrEF.

Returns:
    mae, rmse, r2, auroc (`float`): point estimates (R² NaN for constant references, AUROC NaN
        when the references hold one class only);
    <metric>_ci_low, <metric>_ci_high (`float`): interval bounds, when `num_bootstrap > 0`;
    num_samples (`int`): number of videos.

Examples:
    >>> metric = evaluate.load("discovr/metrics/lvef")
    >>> results = metric.compute(predictions=[60.0, 35.0, 55.0], references=[62.0, 30.0, 45.0], num_bootstrap=0)
    >>> round(results["mae"], 4), results["auroc"]
    (5.6667, 1.0)
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
class Lvef(evaluate.Metric):
    """LVEF regression metrics with bootstrap confidence intervals."""

    def _info(self) -> evaluate.MetricInfo:
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation=_CITATION,
            inputs_description=_KWARGS_DESCRIPTION,
            features=datasets.Features(
                {"predictions": datasets.Value("float64"), "references": datasets.Value("float64")}
            ),
            reference_urls=["https://echonet.github.io/dynamic/"],
        )

    def _compute(
        self,
        predictions: list[float],
        references: list[float],
        num_bootstrap: int = DEFAULT_NUM_BOOTSTRAP,
        confidence_level: float = 0.95,
        seed: int | None = None,
        hfref_threshold: float = HFREF_THRESHOLD,
    ) -> dict[str, float]:
        if num_bootstrap < 0:
            raise ValueError(f"`num_bootstrap` must be >= 0, got {num_bootstrap}.")
        results: dict[str, float] = regression_metrics(predictions, references, hfref_threshold)
        if num_bootstrap > 0:
            intervals = bootstrap_ci(
                predictions,
                references,
                num_bootstrap=num_bootstrap,
                confidence_level=confidence_level,
                seed=seed,
                hfref_threshold=hfref_threshold,
            )
            for name, (low, high) in intervals.items():
                results[f"{name}_ci_low"] = low
                results[f"{name}_ci_high"] = high
        results["num_samples"] = len(predictions)
        return results

"""Figures of LVEF results, training logs, DISCOVR cluster assignments and segmentations, one module per kind of figure.

Plotting only reads what runs write: the `predictions.csv` of `discovr-finetune` (columns `FileName`, `EF`,
`prediction`, `num_clips`), JSONL training logs, and model outputs passed in as arrays. Each `*_figure` function
builds a `matplotlib.figure.Figure` (for notebooks and tests); each `plot_*` function builds it, writes it in every
requested format and returns the paths.

Figures are created without `pyplot`, so importing this package never changes the user's matplotlib backend and
PNGs are rendered by Agg.
"""

from .bland_altman import bland_altman_figure, plot_bland_altman
from .cluster_maps import cluster_map_figure, plot_cluster_maps
from .common import load_predictions_csv
from .roc import plot_roc, roc_figure
from .scatter import lvef_scatter_figure, plot_lvef_scatter
from .segmentation import area_curve_figure, overlay_strip_figure, plot_area_curve, plot_overlay_strip
from .training_curves import plot_training_curves, read_training_log, training_curves_figure


__all__ = [
    "area_curve_figure",
    "bland_altman_figure",
    "cluster_map_figure",
    "load_predictions_csv",
    "lvef_scatter_figure",
    "overlay_strip_figure",
    "plot_area_curve",
    "plot_bland_altman",
    "plot_cluster_maps",
    "plot_lvef_scatter",
    "plot_overlay_strip",
    "plot_roc",
    "plot_training_curves",
    "read_training_log",
    "roc_figure",
    "training_curves_figure",
]

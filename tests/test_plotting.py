"""Plots: each file is a valid image of the expected size, and each shows the data it was given."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from discovr import plotting
from discovr.plotting.cluster_maps import _CLUSTER_PALETTE as CLUSTER_PALETTE
from discovr.plotting.common import DPI
from discovr.metrics import regression_metrics, roc_curve


NUM_BOOTSTRAP = 100


def _pixel_size(figure) -> tuple[int, int]:
    width, height = figure.get_size_inches()
    return round(width * DPI), round(height * DPI)


def _assert_png(path: Path, size: tuple[int, int]) -> None:
    with Image.open(path) as image:
        image.verify()
    with Image.open(path) as image:
        assert image.format == "PNG"
        assert image.size == size


@pytest.fixture
def predictions_csv(tmp_path: Path) -> Path:
    rng = np.random.default_rng(0)
    truth = rng.uniform(15, 80, 120)
    frame = pd.DataFrame(
        {
            "FileName": [f"video_{index:03d}.avi" for index in range(truth.size)],
            "EF": truth,
            "prediction": truth + rng.normal(0, 6, truth.size),
            "num_clips": rng.integers(1, 4, truth.size),
        }
    )
    path = tmp_path / "predictions.csv"
    frame.to_csv(path, index=False)
    return path


def test_lvef_scatter_shows_the_csv_columns(predictions_csv, tmp_path):
    frame = pd.read_csv(predictions_csv)
    figure = plotting.lvef_scatter_figure(predictions_csv, num_bootstrap=NUM_BOOTSTRAP)
    ax = figure.axes[0]
    np.testing.assert_allclose(ax.collections[0].get_offsets(), frame[["EF", "prediction"]].to_numpy())
    mae = regression_metrics(frame["prediction"], frame["EF"])["mae"]
    assert f"MAE {mae:.2f}%" in ax.get_title()
    assert f"n = {len(frame)}" in ax.get_title()
    assert ax.get_xlim() == ax.get_ylim()

    paths = plotting.plot_lvef_scatter(
        predictions_csv, tmp_path / "out" / "scatter", formats=("png", "svg"), num_bootstrap=NUM_BOOTSTRAP
    )
    assert paths == [tmp_path / "out" / "scatter.png", tmp_path / "out" / "scatter.svg"]
    _assert_png(paths[0], _pixel_size(figure))
    assert paths[1].read_text(encoding="utf-8").lstrip().startswith("<?xml")


def test_arrays_and_csv_give_the_same_scatter(predictions_csv):
    frame = pd.read_csv(predictions_csv)
    from_csv = plotting.lvef_scatter_figure(predictions_csv, num_bootstrap=NUM_BOOTSTRAP)
    from_arrays = plotting.lvef_scatter_figure((frame["prediction"], frame["EF"]), num_bootstrap=NUM_BOOTSTRAP)
    np.testing.assert_array_equal(
        from_csv.axes[0].collections[0].get_offsets(), from_arrays.axes[0].collections[0].get_offsets()
    )
    assert from_csv.axes[0].get_title() == from_arrays.axes[0].get_title()


def test_bland_altman_lines(predictions_csv, tmp_path):
    frame = pd.read_csv(predictions_csv)
    differences = frame["prediction"] - frame["EF"]
    figure = plotting.bland_altman_figure(predictions_csv)
    ax = figure.axes[0]
    np.testing.assert_allclose(ax.collections[0].get_offsets()[:, 1], differences)
    horizontal = sorted(line.get_ydata()[0] for line in ax.get_lines())
    bias, spread = differences.mean(), differences.std(ddof=1)
    np.testing.assert_allclose(horizontal, sorted([0.0, bias, bias - 1.96 * spread, bias + 1.96 * spread]))
    assert any(text.get_text().startswith("+1.96 SD") for text in ax.texts)

    (path,) = plotting.plot_bland_altman(predictions_csv, tmp_path / "bland_altman.png")
    _assert_png(path, _pixel_size(figure))


def test_roc_curve_and_legend(predictions_csv, tmp_path):
    frame = pd.read_csv(predictions_csv)
    figure = plotting.roc_figure(predictions_csv, num_bootstrap=NUM_BOOTSTRAP)
    ax = figure.axes[0]
    chance, curve, _ = ax.get_lines()
    np.testing.assert_array_equal(chance.get_xydata(), [[0, 0], [1, 1]])
    fpr, tpr, _ = roc_curve(-frame["prediction"], frame["EF"] < 50)
    np.testing.assert_allclose(curve.get_xydata(), np.column_stack([fpr, tpr]))
    auroc = regression_metrics(frame["prediction"], frame["EF"])["auroc"]
    assert curve.get_label().startswith(f"AUROC {auroc:.3f} (95% CI ")

    (path,) = plotting.plot_roc(predictions_csv, tmp_path / "roc.png", num_bootstrap=NUM_BOOTSTRAP)
    _assert_png(path, _pixel_size(figure))


def test_roc_needs_both_classes():
    with pytest.raises(ValueError, match="both sides of the threshold"):
        plotting.roc_figure(([60.0, 70.0], [55.0, 65.0]), num_bootstrap=NUM_BOOTSTRAP)


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("", "is empty"),
        ("FileName,EF,num_clips\na.avi,50,1\n", r"lacks column\(s\) \['prediction'\]"),
        ("FileName,EF,prediction,num_clips\n", "has no rows"),
        ("FileName,EF,prediction,num_clips\na.avi,50,,1\n", "`prediction` has 1 missing"),
    ],
)
def test_bad_predictions_csv_raises(tmp_path, content, message):
    path = tmp_path / "predictions.csv"
    path.write_text(content)
    with pytest.raises(ValueError, match=message):
        plotting.plot_lvef_scatter(path, tmp_path / "scatter.png")


def test_bad_formats_raise(predictions_csv, tmp_path):
    with pytest.raises(ValueError, match="Unsupported figure format"):
        plotting.plot_bland_altman(predictions_csv, tmp_path / "ba.png", formats=("bmpx",))
    with pytest.raises(ValueError, match="non-empty sequence"):
        plotting.plot_bland_altman(predictions_csv, tmp_path / "ba.png", formats="png")


def _write_jsonl(path: Path, rows: list[dict | str]) -> Path:
    path.write_text("\n".join(row if isinstance(row, str) else json.dumps(row) for row in rows) + "\n")
    return path


def test_training_curves_one_line_per_loss_key(tmp_path):
    rows = [
        {"step": step, "lr": 1e-4 * step / 40, "loss": 10.0 - step / 10, "loss_scd": 5.0, "loss_video_dino": 4.0}
        for step in range(0, 40, 2)
    ]
    rows[3].pop("loss_scd")
    rows[5].pop("lr")
    rows.insert(4, {"epoch": 0.5})  # no step: skipped
    rows.append({"step": 40, "lr": 1e-4, "loss": 5.0, "loss_image_dino": 7.0})
    rows.append({"step": 40, "lr": 1e-4, "loss": 6.0, "loss_image_dino": 7.5})  # re-logged after a resume
    path = _write_jsonl(tmp_path / "log.jsonl", rows)

    log = plotting.read_training_log(path)
    assert list(log.index) == list(range(0, 42, 2))
    assert log.loc[40, "loss"] == 6.0

    figure = plotting.training_curves_figure(path)
    loss_ax, lr_ax = figure.axes
    labels = [line.get_label() for line in loss_ax.get_lines()]
    assert labels == ["loss", "loss_image_dino", "loss_scd", "loss_video_dino"]
    scd = loss_ax.get_lines()[2]
    assert len(scd.get_xdata()) == 19  # 20 logged steps with a loss_scd, less the one that lacks it
    (lr_line,) = lr_ax.get_lines()
    assert len(lr_line.get_xdata()) == 20

    smoothed = plotting.training_curves_figure(path, smoothing=0.6)
    legend = [text.get_text() for text in smoothed.axes[0].get_legend().get_texts()]
    assert legend == labels

    (png,) = plotting.plot_training_curves(path, tmp_path / "curves.png")
    _assert_png(png, _pixel_size(figure))


def test_training_curves_show_the_pretraining_health(tmp_path):
    """Each health group the log holds gets its own panel between the losses and the lr; the entropy panel marks
    the uniform-teacher line; groups the log lacks get none."""
    rows = [
        {"step": step, "lr": 1e-3, "loss": 9.0, "video_teacher_entropy": 0.9, "image_teacher_entropy": 0.7,
         "scd_codes_used": 60, "scd_code_perplexity": 55.0, "video_teacher_rankme": 4.0 + step}
        for step in range(1, 6)
    ]
    path = _write_jsonl(tmp_path / "log.jsonl", rows)
    figure = plotting.training_curves_figure(path)
    loss_ax, entropy_ax, counts_ax, lr_ax = figure.axes
    assert [line.get_label() for line in entropy_ax.get_lines()] == [
        "video_teacher_entropy", "image_teacher_entropy", "uniform teacher"
    ]
    assert list(entropy_ax.get_lines()[-1].get_ydata()) == [1.0, 1.0]
    assert [line.get_label() for line in counts_ax.get_lines()] == [
        "scd_code_perplexity", "scd_codes_used", "video_teacher_rankme"
    ]
    assert list(counts_ax.get_lines()[2].get_ydata()) == [5.0, 6.0, 7.0, 8.0, 9.0]
    assert lr_ax.get_xlabel() == "optimiser step"


def test_training_curves_accepts_trainer_learning_rate(tmp_path):
    path = _write_jsonl(tmp_path / "log.jsonl", [{"step": 1, "learning_rate": 1e-3, "loss": 2.0}])
    assert plotting.read_training_log(path).loc[1, "lr"] == 1e-3


@pytest.mark.parametrize(
    ("rows", "message"),
    [
        ([], "no usable rows"),
        ([{"epoch": 1, "loss": 1.0}], "no usable rows"),
        ([{"step": 1, "lr": 0.1, "accuracy": 0.5}], "no usable rows"),
        ([{"step": 1, "loss": 1.0}], "no `lr`"),
        (['{"step": 1, "loss": '], "line 1: not valid JSON"),
        (["[1, 2]"], "expected a JSON object"),
        ([{"step": 1, "lr": 0.1, "loss_scd": "high"}], "`loss_scd` must be a number"),
    ],
)
def test_unusable_training_log_raises(tmp_path, rows, message):
    path = _write_jsonl(tmp_path / "log.jsonl", rows)
    with pytest.raises(ValueError, match=message):
        plotting.plot_training_curves(path, tmp_path / "curves.png")


def test_cluster_maps_png_and_gif(tmp_path):
    num_frames, size, grid, tubelet = 8, 32, 4, 2
    rng = np.random.default_rng(0)
    # Black frames make the overlay exactly alpha * colour, so the GIF pixels are predictable.
    frames = np.zeros((num_frames, size, size), dtype=np.uint8)
    frames[:, 0, 0] = np.arange(num_frames)  # distinct frames, or the GIF writer merges them
    teacher = np.full((num_frames // tubelet, grid, grid), 17, dtype=np.int64)
    teacher[:, :, grid // 2 :] = 5
    teacher[:, 0, grid // 2 :] = rng.integers(100, 120, size=(num_frames // tubelet, grid - grid // 2))
    predicted = teacher.copy()
    predicted[:, -1, 0] = 5

    paths = plotting.plot_cluster_maps(
        frames,
        teacher,
        tmp_path / "maps.png",
        tmp_path / "maps.gif",
        num_prototypes=128,
        predicted_assignments=predicted,
        num_columns=3,
        alpha=0.5,
        max_colors=2,
    )
    assert paths == [tmp_path / "maps.png", tmp_path / "maps.gif"]

    figure = plotting.cluster_map_figure(
        frames, teacher, predicted, num_prototypes=128, num_columns=3, alpha=0.5, max_colors=2
    )
    _assert_png(paths[0], _pixel_size(figure))
    assert len(figure.axes) == 3 * 3  # rows: frame, image teacher, video prediction
    legend = [text.get_text() for text in figure.legends[0].get_texts()]
    # Of 128 tokens over both rows, 17 covers 60 and 5 covers 52; 16 random ones are "other".
    assert legend[:2] == ["#17 (47%)", "#5 (41%)"]
    assert legend[2].endswith("other prototypes")
    agreement = np.mean(teacher == predicted)
    assert f"{100 * agreement:.1f}% of tokens" in figure.get_suptitle()

    with Image.open(paths[1]) as gif:
        assert gif.format == "GIF"
        assert gif.n_frames == num_frames
        scale = -(-224 // size)
        panel = size * scale
        assert gif.size == (3 * panel + 2 * 4, panel + 18)
        gif.seek(3)
        rgb = np.asarray(gif.convert("RGB"), dtype=float)
    # Bottom-left token of the teacher panel is prototype 17, the most used: the first colour.
    expected = 0.5 * 255 * np.asarray(CLUSTER_PALETTE[0])
    np.testing.assert_allclose(rgb[18 + panel - 2, panel + 4 + 2], expected, atol=6)


def test_cluster_maps_accept_rgb_float_frames_and_reject_bad_shapes(tmp_path):
    frames = np.random.default_rng(0).normal(size=(4, 16, 16, 3))  # normalised model inputs
    assignments = np.zeros((2, 2, 2), dtype=np.int64)
    (path,) = plotting.plot_cluster_maps(frames, assignments, tmp_path / "maps.png")
    assert path.is_file()
    with pytest.raises(ValueError, match="equal length"):
        plotting.plot_cluster_maps(frames, np.zeros((3, 2, 2), dtype=np.int64), tmp_path / "maps.png")
    with pytest.raises(ValueError, match=r"outside \[0, 4\)"):
        plotting.plot_cluster_maps(frames, np.full((2, 2, 2), 4), tmp_path / "maps.png", num_prototypes=4)
    with pytest.raises(ValueError, match="integer prototype indices"):
        plotting.plot_cluster_maps(frames, np.zeros((2, 2, 2)), tmp_path / "maps.png")
    with pytest.raises(ValueError, match="differs from `assignments`"):
        plotting.plot_cluster_maps(
            frames, assignments, tmp_path / "maps.png", predicted_assignments=np.zeros((2, 4, 4), dtype=np.int64)
        )


def test_area_curve_marks_the_detected_beats(tmp_path):
    areas = 1000 + 200 * np.cos(np.arange(120) * 2 * np.pi / 50)
    figure = plotting.area_curve_figure(areas, fps=50.0, ed_frames=[50, 100], es_frames=[75], beat_efs=[40.0])
    ax = figure.axes[0]
    ed, es = (collection.get_offsets() for collection in ax.collections)
    np.testing.assert_allclose(ed, [[1.0, areas[50]], [2.0, areas[100]]])
    np.testing.assert_allclose(es, [[1.5, areas[75]]])
    assert [text.get_text() for text in ax.texts] == ["EF 40%"] and ax.get_xlabel() == "time (s)"
    paths = plotting.plot_area_curve(areas, None, tmp_path / "area.png")
    _assert_png(paths[0], _pixel_size(plotting.area_curve_figure(areas, None)))
    assert plotting.area_curve_figure(areas, None).axes[0].get_xlabel() == "frame"
    with pytest.raises(ValueError, match="non-empty 1-D"):
        plotting.area_curve_figure(np.zeros((2, 2)), fps=50.0)


def test_overlay_strip_tints_each_structure(tmp_path):
    frame = np.full((20, 30), 100, np.uint8)
    labels = np.zeros((20, 30), np.uint8)
    labels[:5] = 1
    labels[15:] = 3
    image = plotting.segmentation.overlay_masks(frame, labels, alpha=0.5)
    np.testing.assert_allclose(image[10, 10], [100 / 255] * 3)
    np.testing.assert_allclose(image[0, 0], 0.5 * 100 / 255 + 0.5 * np.asarray(plotting.segmentation.STRUCTURE_COLORS[0]))
    np.testing.assert_allclose(image[19, 0], 0.5 * 100 / 255 + 0.5 * np.asarray(plotting.segmentation.STRUCTURE_COLORS[2]))
    paths = plotting.plot_overlay_strip([frame, frame], [labels, labels], ["ED", "ES"], tmp_path / "strip.png")
    _assert_png(paths[0], _pixel_size(plotting.overlay_strip_figure([frame, frame], [labels, labels], ["ED", "ES"])))
    with pytest.raises(ValueError, match="differ in size"):
        plotting.segmentation.overlay_masks(frame, labels[:10])

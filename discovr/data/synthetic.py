"""Synthetic apical-view echo videos in the EchoNet-Dynamic layout, with EF known from their geometry."""

from __future__ import annotations

import logging
import math
import os
from dataclasses import dataclass

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from ..cli import DiscovrArgumentParser, InputError, argument, run_console_script
from .avi import write_avi


logger = logging.getLogger(__name__)

FILE_LIST_COLUMNS = ["FileName", "EF", "ESV", "EDV", "FrameHeight", "FrameWidth", "FPS", "NumberOfFrames", "Split"]
TRACING_COLUMNS = ["FileName", "X1", "Y1", "X2", "Y2", "Frame"]
GROUND_TRUTH_FILE = "SyntheticGroundTruth.csv"
PARAMETERS_FILE = "SyntheticParameters.csv"

FRAME_SIZE = 112
FPS = 50
NUM_DISCS = 20
# About 15 cm of depth over 112 pixels at zoom 1, which puts EDV near the adult range (roughly 60-200 mL).
CM_PER_PIXEL = 0.14
TRANSDUCER_Y = 1.0
SECTOR_RADIUS = 108.0
# Per-frame label maps, in CAMUS's convention so segmentation code reads both alike.
MASKS_DIR = "Masks"
LABEL_BACKGROUND, LABEL_LV_CAVITY, LABEL_LV_MYOCARDIUM, LABEL_LEFT_ATRIUM = 0, 1, 2, 3


@dataclass
class _Heart:
    """Anatomy and rhythm of one synthetic heart, in anatomy units (pixels at zoom 1) from the transducer, y down.

    EF depends only on the two shortening fractions; the chamber sizes, positions and the other chambers' motion
    are drawn independently of them, so EF cannot be read from how large or how dark the heart looks.
    """

    lv_apex: np.ndarray
    lv_axis_angle: float
    lv_length: float
    lv_half_width: float
    longitudinal_shortening: float
    radial_shortening: float
    wall: float
    wall_thickening: float
    rv_scale: float
    rv_shortening: float
    atrium_scale: float
    atrial_filling: float
    period: float
    phase: float


@dataclass
class _Imaging:
    """Scanner settings and image quality of one video: the nuisance the model must see through."""

    transducer_x: float
    sector_half_angle: float
    zoom: float  # depth setting: anatomy pixels per pixel at zoom 1
    rotation: float  # probe rotation of the anatomy about the transducer (radians)
    gain: float
    tissue: float
    attenuation: float  # loss of brightness from the near to the far field
    near_field: float
    myocardium_contrast: float
    blood: float
    speckle_persistence: float  # share of the speckle pattern kept from frame to frame
    noise: float  # std of the additive electronic noise

    @property
    def cm_per_pixel(self) -> float:
        return CM_PER_PIXEL / self.zoom

    def to_image(self, points: np.ndarray) -> np.ndarray:
        """Anatomy coordinates `(..., 2)` to image pixel coordinates."""
        cos, sin = math.cos(self.rotation), math.sin(self.rotation)
        x, y = points[..., 0], points[..., 1]
        rotated = np.stack([cos * x - sin * y, sin * x + cos * y], axis=-1)
        return np.array([self.transducer_x, TRANSDUCER_Y]) + self.zoom * rotated

    def to_anatomy(self, x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Image pixel coordinates to anatomy coordinates (the inverse of `to_image`)."""
        cos, sin = math.cos(self.rotation), math.sin(self.rotation)
        dx, dy = (x - self.transducer_x) / self.zoom, (y - TRANSDUCER_Y) / self.zoom
        return cos * dx + sin * dy, -sin * dx + cos * dy


def cavity_volume_ml(chord_lengths: np.ndarray, long_axis_length: float, cm_per_pixel: float = CM_PER_PIXEL) -> float:
    """Method-of-discs LV volume in mL from the chord lengths and long axis of one traced frame (pixels)."""
    disc_height = long_axis_length / len(chord_lengths)
    volume_px = float(np.sum(math.pi * (np.asarray(chord_lengths) / 2.0) ** 2) * disc_height)
    return volume_px * cm_per_pixel**3


def _draw_heart(rng: np.random.Generator) -> _Heart:
    # About a third of hearts are impaired (weak radial shortening), the others normal, so roughly 30% of EF
    # values fall below 50% and the range spans about 15-80%.
    if rng.random() < 0.32:
        radial = rng.uniform(0.05, 0.25)
    else:
        radial = float(np.clip(rng.normal(0.36, 0.06), 0.25, 0.5))
    longitudinal = float(np.clip(0.02 + 0.4 * radial + rng.normal(0.0, 0.015), 0.01, 0.3))
    return _Heart(
        lv_apex=np.array([4.0 + rng.normal(0, 3), 15.0 + rng.normal(0, 3)]),
        lv_axis_angle=math.radians(rng.uniform(-4.0, 14.0)),
        lv_length=rng.uniform(50.0, 70.0),
        lv_half_width=rng.uniform(12.0, 18.0),
        longitudinal_shortening=longitudinal,
        radial_shortening=radial,
        wall=rng.uniform(4.5, 7.5),
        wall_thickening=rng.uniform(0.3, 0.6),
        rv_scale=rng.uniform(0.7, 1.3),
        rv_shortening=rng.uniform(0.1, 0.4),
        atrium_scale=rng.uniform(0.8, 1.2),
        atrial_filling=rng.uniform(0.05, 0.3),
        # 30-60 frames per beat at 50 fps is 50-100 bpm, a resting adult's range.
        period=rng.uniform(30.0, 60.0),
        phase=rng.uniform(0.0, 1.0),
    )


def _draw_imaging(rng: np.random.Generator) -> _Imaging:
    return _Imaging(
        transducer_x=FRAME_SIZE / 2 + rng.uniform(-3.0, 3.0),
        sector_half_angle=math.radians(rng.uniform(32.0, 38.0)),
        zoom=rng.uniform(0.93, 1.07),
        rotation=math.radians(rng.uniform(-8.0, 8.0)),
        gain=rng.uniform(0.92, 1.08),
        tissue=rng.uniform(66.0, 74.0),
        attenuation=rng.uniform(0.4, 0.5),
        near_field=rng.uniform(35.0, 45.0),
        myocardium_contrast=rng.uniform(2.0, 2.2),
        blood=rng.uniform(2.5, 5.5),
        speckle_persistence=rng.uniform(0.4, 0.7),
        noise=rng.uniform(0.0, 5.0),
    )


def _contraction(heart: _Heart, frames: np.ndarray) -> np.ndarray:
    """0 at end-diastole, 1 at end-systole; systole takes about 40% of the beat, as in a real cycle."""
    cycle = (frames / heart.period + heart.phase) % 1.0
    systole = 0.4
    return np.where(
        cycle < systole,
        0.5 - 0.5 * np.cos(np.pi * cycle / systole),
        0.5 + 0.5 * np.cos(np.pi * (cycle - systole) / (1 - systole)),
    )


def _profile(s: np.ndarray) -> np.ndarray:
    """Half-width of the cavity along its long axis (0 at the apex, 1 at the mitral plane), as a bullet shape."""
    return np.sqrt(np.clip(1.0 - ((s - 0.6) / 0.6) ** 2, 0.0, None))


def _lv_shape(heart: _Heart, contraction: float) -> tuple[np.ndarray, np.ndarray, float, float]:
    """Apex, unit long-axis direction, length and maximum half-width of the cavity at a contraction level."""
    direction = np.array([math.sin(heart.lv_axis_angle), math.cos(heart.lv_axis_angle)])
    length = heart.lv_length * (1.0 - heart.longitudinal_shortening * contraction)
    half_width = heart.lv_half_width * (1.0 - heart.radial_shortening * contraction)
    # Longitudinal shortening moves the apex and keeps the mitral plane fixed, so the atria need not move.
    base = heart.lv_apex + direction * heart.lv_length
    apex = base - direction * length
    return apex, direction, length, half_width


def _tracing(heart: _Heart, contraction: float) -> tuple[np.ndarray, np.ndarray, float]:
    """EchoNet tracing of one frame in anatomy units: the long axis row then NUM_DISCS chord rows, the chord
    lengths and the long-axis length."""
    apex, direction, length, half_width = _lv_shape(heart, contraction)
    normal = np.array([direction[1], -direction[0]])
    base = apex + direction * length
    rows = [np.concatenate([apex, base])]
    s = (np.arange(NUM_DISCS) + 0.5) / NUM_DISCS
    widths = 2.0 * half_width * _profile(s)
    for position, width in zip(s, widths):
        centre = apex + direction * (position * length)
        rows.append(np.concatenate([centre - normal * width / 2, centre + normal * width / 2]))
    return np.stack(rows), widths, length


def _cavity_area(heart: _Heart, contraction: np.ndarray) -> np.ndarray:
    """Planimetric cavity area in anatomy pixels, from the same disc geometry as the tracings."""
    length = heart.lv_length * (1.0 - heart.longitudinal_shortening * contraction)
    half_width = heart.lv_half_width * (1.0 - heart.radial_shortening * contraction)
    s = (np.arange(NUM_DISCS) + 0.5) / NUM_DISCS
    return 2.0 * half_width * _profile(s).mean() * length


class _Renderer:
    """Draws the frames and label maps of one heart under one imaging setting; fixed parts are computed once."""

    def __init__(self, heart: _Heart, imaging: _Imaging, rng: np.random.Generator):
        self.heart = heart
        self.imaging = imaging
        self.rng = rng
        y, x = np.mgrid[0:FRAME_SIZE, 0:FRAME_SIZE].astype(np.float64)
        dx, dy = x - imaging.transducer_x, y - TRANSDUCER_Y
        radius = np.hypot(dx, dy)
        self.sector = (radius <= SECTOR_RADIUS) & (np.abs(np.arctan2(dx, dy)) <= imaging.sector_half_angle)
        # Echo intensity fades with depth and is bright in the near field.
        depth_gain = 1.15 - imaging.attenuation * (radius / SECTOR_RADIUS)
        self.static_background = imaging.tissue * depth_gain + imaging.near_field * np.exp(-(((radius - 6.0) / 6.0) ** 2))
        self.static_speckle = self._speckle()
        self.ax, self.ay = imaging.to_anatomy(x, y)
        # The other chambers sit where the LV does: the right ventricle beside it, the atria below its base.
        _, direction, _, _ = _lv_shape(heart, 0.0)
        base = heart.lv_apex + direction * heart.lv_length
        middle = heart.lv_apex + direction * heart.lv_length / 2
        septum_side = np.array([-direction[1], direction[0]])
        offset = heart.lv_half_width + heart.wall + 9.0 * heart.rv_scale
        self.right_ventricle_centre = middle + septum_side * offset + direction * 5.0
        self.left_atrium_centre = base + np.array([10.0, 18.0])
        self.right_atrium_centre = base + np.array([-28.0, 15.0])

    def _ellipse(self, centre: np.ndarray, ax: float, ay: float, angle: float) -> np.ndarray:
        dx, dy = self.ax - centre[0], self.ay - centre[1]
        u = dx * math.cos(angle) + dy * math.sin(angle)
        v = -dx * math.sin(angle) + dy * math.cos(angle)
        return (u / ax) ** 2 + (v / ay) ** 2 <= 1.0

    def _speckle(self) -> np.ndarray:
        """Rayleigh speckle with unit mean and grains a couple of pixels wide."""
        noise = self.rng.rayleigh(1.0, size=(FRAME_SIZE + 2, FRAME_SIZE + 2))
        grains = (noise[1:-1, 1:-1] * 2 + noise[:-2, 1:-1] + noise[2:, 1:-1] + noise[1:-1, :-2] + noise[1:-1, 2:]) / 6
        return grains / grains.mean()

    def _lv_masks(self, contraction: float) -> tuple[np.ndarray, np.ndarray]:
        """Cavity mask and myocardium mask at one contraction level."""
        apex, direction, length, half_width = _lv_shape(self.heart, contraction)
        dx, dy = self.ax - apex[0], self.ay - apex[1]
        along = (dx * direction[0] + dy * direction[1]) / length
        across = np.abs(dx * direction[1] - dy * direction[0])
        cavity = (along >= 0) & (along <= 1) & (across <= half_width * _profile(along))
        # The wall thickens as the cavity shrinks, as myocardium is incompressible.
        wall = self.heart.wall * (1.0 + self.heart.wall_thickening * contraction)
        outer_along = (dx * direction[0] + dy * direction[1] + wall) / (length + wall)
        outer = (outer_along >= 0) & (along <= 1) & (across <= (half_width + wall) * _profile(outer_along))
        return cavity, outer & ~cavity

    def _other_chambers(self, contraction: float) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """Right ventricle, left atrium, right atrium and the atrial walls at one contraction level.

        The right ventricle contracts with the left, by its own fraction; the atria fill while the ventricles
        contract. Both keep the heart's total dark area from tracking the LV's alone.
        """
        heart = self.heart
        rv = heart.rv_scale * (1.0 - heart.rv_shortening * contraction)
        atria = heart.atrium_scale * (1.0 + heart.atrial_filling * contraction)
        right_ventricle = self._ellipse(self.right_ventricle_centre, 11.0 * rv, 24.0 * heart.rv_scale, math.radians(-18.0))
        left_atrium = self._ellipse(self.left_atrium_centre, 15.0 * atria, 11.0 * atria, 0.0)
        right_atrium = self._ellipse(self.right_atrium_centre, 12.0 * atria, 10.0 * atria, 0.0)
        walls = self._ellipse(self.left_atrium_centre, 15.0 * atria + 4, 11.0 * atria + 4, 0.0)
        walls |= self._ellipse(self.right_atrium_centre, 12.0 * atria + 4, 10.0 * atria + 4, 0.0)
        return right_ventricle, left_atrium, right_atrium, walls & ~(left_atrium | right_atrium)

    def frame(self, contraction: float) -> tuple[np.ndarray, np.ndarray]:
        """One grayscale uint8 frame and its label map (`LABEL_*`, 0 outside the sector)."""
        imaging = self.imaging
        cavity, myocardium = self._lv_masks(contraction)
        right_ventricle, left_atrium, right_atrium, atrial_walls = self._other_chambers(contraction)
        value = self.static_background.copy()
        value[myocardium | atrial_walls] *= imaging.myocardium_contrast
        value[cavity | right_ventricle | left_atrium | right_atrium] = imaging.blood
        # Speckle decorrelates slowly: mix a fixed pattern with fresh noise every frame.
        persistence = imaging.speckle_persistence
        speckle = persistence * self.static_speckle + (1.0 - persistence) * self._speckle()
        image = value * speckle * imaging.gain + self.rng.normal(0.0, imaging.noise, value.shape)
        image[~self.sector] = 0.0

        labels = np.zeros(value.shape, dtype=np.uint8)
        labels[left_atrium] = LABEL_LEFT_ATRIUM
        labels[myocardium] = LABEL_LV_MYOCARDIUM
        labels[cavity] = LABEL_LV_CAVITY
        labels[~self.sector] = LABEL_BACKGROUND
        return np.clip(image, 0, 255).astype(np.uint8), labels


def _parameter_row(heart: _Heart, imaging: _Imaging) -> dict[str, float]:
    """Every drawn parameter of one video, angles in degrees, for analysis of what the data varies."""
    row = {}
    for name, value in {**vars(heart), **vars(imaging)}.items():
        if isinstance(value, np.ndarray):
            row.update({f"{name}_x": float(value[0]), f"{name}_y": float(value[1])})
        elif "angle" in name or name == "rotation":
            row[f"{name}_deg"] = math.degrees(value)
        else:
            row[name] = float(value)
    return row


def _traced_frames(heart: _Heart, num_frames: int) -> tuple[int, int]:
    """An end-diastolic frame and the end-systolic frame of the same beat (the one after it)."""
    frames = np.arange(num_frames)
    contraction = _contraction(heart, frames)
    # Beat k's end-diastole is where (t / period + phase) crosses an integer.
    first_beat = math.ceil(heart.phase - 1e-9)
    for beat in range(first_beat, first_beat + 4):
        ed = int(round((beat - heart.phase) * heart.period))
        es = int(round((beat - heart.phase + 0.4) * heart.period))
        if 0 <= ed and es < num_frames:
            return ed, es
    # A video is always longer than a beat and a half, so one of those beats fits; keep a safe fallback anyway.
    return int(np.argmin(contraction)), int(np.argmax(contraction))


def make_synthetic_echonet(
    root: str | os.PathLike,
    num_videos: int = 100,
    seed: int = 0,
    min_seconds: float = 2.0,
    max_seconds: float = 5.0,
    split_fractions: tuple[float, float, float] = (0.7, 0.15, 0.15),
    progress: bool = True,
) -> pd.DataFrame:
    """
    Write a synthetic EchoNet-Dynamic folder: `FileList.csv`, `VolumeTracings.csv`, `Videos/*.avi` and `Masks/*.npz`.

    Each video is an apical view: a fan-shaped sector on black, Rayleigh speckle, a bright myocardial wall around a
    dark LV cavity that contracts over cardiac cycles of random rate and phase, and static right-heart and atrial
    pools. EDV and ESV are the method-of-discs volumes of the traced ED and ES cavities, and EF follows from them.
    `SyntheticGroundTruth.csv` holds the per-frame cavity area (`CavityArea`) and contraction, the cycle the video
    shows. `Masks/<FileName>.npz` holds `labels`, the ground-truth label map of every frame, `(T, H, W)` uint8 in
    CAMUS's classes (`LABEL_*`: 0 background, 1 LV cavity, 2 LV myocardium, 3 left atrium; 0 outside the sector):
    the cavity of frame t is `labels[t] == 1`, the same geometry as its tracings and `CavityArea` where the cavity
    lies inside the sector. Where the sector cuts it, the mask is cut too, while EF, the tracings and `CavityArea`
    keep the whole cavity, so EF computed from the masks of those videos comes out lower.

    The output depends only on the arguments: the same seed writes the same files.

    Args:
        root: output folder (created if needed).
        num_videos: number of videos.
        seed: seed of every random draw.
        min_seconds: shortest video, in seconds at 50 fps.
        max_seconds: longest video.
        split_fractions: TRAIN, VAL and TEST shares.
        progress: show a progress bar.

    Returns:
        The `FileList.csv` table.
    """
    if num_videos < 1:
        raise InputError(f"num_videos must be >= 1, got {num_videos}")
    if not 1.6 <= min_seconds <= max_seconds:
        raise InputError(f"need 1.6 <= min_seconds <= max_seconds (a full beat must fit), got {min_seconds}, {max_seconds}")
    if len(split_fractions) != 3 or min(split_fractions) < 0 or not math.isclose(sum(split_fractions), 1.0):
        raise InputError(f"split_fractions must be three non-negative shares summing to 1, got {split_fractions}")

    video_dir = os.path.join(os.fspath(root), "Videos")
    os.makedirs(video_dir, exist_ok=True)
    rng = np.random.default_rng(seed)
    counts = np.floor(np.asarray(split_fractions) * num_videos).astype(int)
    counts[0] += num_videos - counts.sum()
    splits = rng.permutation(np.repeat(["TRAIN", "VAL", "TEST"], counts))

    file_rows, tracing_rows, truth_rows, parameter_rows = [], [], [], []
    os.makedirs(os.path.join(os.fspath(root), MASKS_DIR), exist_ok=True)
    for index in tqdm(range(num_videos), desc="synthetic echo", unit="video", disable=not progress):
        video_rng = np.random.default_rng([seed, index])
        heart = _draw_heart(video_rng)
        imaging = _draw_imaging(video_rng)
        num_frames = int(round(video_rng.uniform(min_seconds, max_seconds) * FPS))
        name = f"0X{seed:04X}{index:06X}"
        contraction = _contraction(heart, np.arange(num_frames))

        renderer = _Renderer(heart, imaging, video_rng)
        frames, labels = (np.stack(parts) for parts in zip(*(renderer.frame(level) for level in contraction)))
        write_avi(os.path.join(video_dir, f"{name}.avi"), frames, FPS)
        np.savez_compressed(os.path.join(os.fspath(root), MASKS_DIR, f"{name}.npz"), labels=labels)

        ed, es = _traced_frames(heart, num_frames)
        volumes = {}
        for frame in (ed, es):
            rows, widths, length = _tracing(heart, contraction[frame])
            rows = imaging.to_image(rows.reshape(-1, 2, 2)).reshape(-1, 4)
            volumes[frame] = cavity_volume_ml(imaging.zoom * widths, imaging.zoom * length, imaging.cm_per_pixel)
            tracing_rows += [[f"{name}.avi", *np.round(row, 4), frame] for row in rows]
        edv, esv = volumes[ed], volumes[es]
        file_rows.append(
            [name, 100.0 * (edv - esv) / edv, esv, edv, FRAME_SIZE, FRAME_SIZE, FPS, num_frames, splits[index]]
        )
        areas = _cavity_area(heart, contraction) * imaging.zoom**2
        truth_rows += [[name, t, areas[t], contraction[t]] for t in range(num_frames)]
        parameter_rows.append({"FileName": name, "CmPerPixel": imaging.cm_per_pixel, **_parameter_row(heart, imaging)})

    file_list = pd.DataFrame(file_rows, columns=FILE_LIST_COLUMNS)
    file_list.to_csv(os.path.join(root, "FileList.csv"), index=False)
    pd.DataFrame(tracing_rows, columns=TRACING_COLUMNS).to_csv(os.path.join(root, "VolumeTracings.csv"), index=False)
    pd.DataFrame(truth_rows, columns=["FileName", "Frame", "CavityArea", "Contraction"]).to_csv(
        os.path.join(root, GROUND_TRUTH_FILE), index=False
    )
    pd.DataFrame(parameter_rows).to_csv(os.path.join(root, PARAMETERS_FILE), index=False)
    logger.info("Wrote %d synthetic videos to %s", num_videos, root)
    return file_list


@dataclass
class SynthArguments:
    """The `discovr-synth` options."""

    output_dir: str = argument(help="Folder to write (created if missing).", positional=True)
    num_videos: int = argument(100, help="Number of videos.")
    seed: int = argument(0, help="Random seed; the same seed writes the same data.")
    min_seconds: float = argument(2.0, help="Shortest video in seconds.")
    max_seconds: float = argument(5.0, help="Longest video in seconds.")
    splits: list[float] = argument(
        [0.7, 0.15, 0.15], help="Shares of the TRAIN, VAL and TEST splits.", nargs=3, metavar=("TRAIN", "VAL", "TEST")
    )
    progress: bool = argument(True, help="Show a progress bar.")


def main(argv: list[str] | None = None) -> int:
    """`discovr-synth`: write a synthetic EchoNet-Dynamic-layout data set."""
    parser = DiscovrArgumentParser(
        SynthArguments,
        prog="discovr-synth",
        description=(
            "Write a synthetic echocardiography data set in the EchoNet-Dynamic layout: FileList.csv, "
            "VolumeTracings.csv (ED and ES tracings) and Videos/*.avi (112x112 MJPEG at 50 fps), plus "
            f"{GROUND_TRUTH_FILE} with the per-frame cavity area. EF is computed from the cavity geometry."
        ),
    )
    args = parser.parse(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")

    def run() -> int:
        make_synthetic_echonet(
            args.output_dir,
            num_videos=args.num_videos,
            seed=args.seed,
            min_seconds=args.min_seconds,
            max_seconds=args.max_seconds,
            split_fractions=tuple(args.splits),
            progress=args.progress,
        )
        return 0

    return run_console_script(parser.prog, run)


if __name__ == "__main__":
    main()

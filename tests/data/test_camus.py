"""CAMUS: layout, info files, splits, and image orientation, on tiny folders written with nibabel and SimpleITK."""

import tempfile
from pathlib import Path

import nibabel
import numpy as np
import pytest
import SimpleITK as sitk

from discovr.data import ManifestError
from discovr.data.camus import CAMUS_LABELS, load_camus, load_camus_images, read_camus_cfg, read_camus_image


HEIGHT, WIDTH, FRAMES = 6, 9, 4


def frame_image(offset=0):
    """A frame whose every pixel differs (value = 9 * row + column + offset): any transposition or flip shows."""
    return (np.arange(HEIGHT * WIDTH).reshape(HEIGHT, WIDTH) + offset).astype(np.uint8)


def frame_label():
    """Cavity top left, myocardium right, atrium one pixel at the bottom left: no symmetry maps it onto itself."""
    label = np.zeros((HEIGHT, WIDTH), np.uint8)
    label[0:2, 0:4] = 1
    label[2:4, 5:9] = 2
    label[5, 1] = 3
    return label


def write_nifti(path, array):
    """As the published NIfTI files are stored: x (the columns) first, so nibabel sees (W, H[, T])."""
    nibabel.save(nibabel.Nifti1Image(np.ascontiguousarray(array.T), np.eye(4)), str(path))


def write_metaimage(path, array):
    sitk.WriteImage(sitk.GetImageFromArray(array), str(path))


def write_patient(root, patient, views=("2CH", "4CH"), fmt="nifti", cfg=None, sequence_label=True):
    folder = root / patient
    folder.mkdir(parents=True, exist_ok=True)
    ext, write = (".nii.gz", write_nifti) if fmt == "nifti" else (".mhd", write_metaimage)
    sequence = np.stack([frame_image(10 * t) for t in range(FRAMES)])
    labels = np.stack([np.roll(frame_label(), t, axis=1) for t in range(FRAMES)])
    for view in views:
        base = folder / f"{patient}_{view}"
        for phase, index in (("ED", 0), ("ES", FRAMES - 1)):
            image, label = sequence[index], labels[index]
            if fmt == "metaimage":  # the first release stores a frame as a one-frame volume
                image, label = image[None], label[None]
            write(f"{base}_{phase}{ext}", image)
            write(f"{base}_{phase}_gt{ext}", label)
        if fmt == "nifti":
            write(f"{base}_half_sequence{ext}", sequence)
            if sequence_label:
                write(f"{base}_half_sequence_gt{ext}", labels)
        else:
            write(f"{base}_sequence{ext}", sequence)
        text = cfg if cfg is not None else (
            f"ED: 1\nES: {FRAMES}\nNbFrame: {FRAMES}\nSex: F\nAge: 55\nImageQuality: Good\n"
            f"LVedv: 100.0\nLVesv: 48.0\nLVef: {52.0 if view == '2CH' else 50.5}\n"
        )
        (folder / f"Info_{view}.cfg").write_text(text)
    return folder


def write_splits(folder, train, validation, test):
    folder.mkdir(parents=True, exist_ok=True)
    for name, patients in (("training", train), ("validation", validation), ("testing", test)):
        (folder / f"subgroup_{name}.txt").write_text("".join(f"{p}\n" for p in patients))


@pytest.fixture
def nifti_release(tmp_path):
    """The current release: `database_nifti/patientNNNN` with `database_split/` beside it."""
    root = tmp_path / "CAMUS_public" / "database_nifti"
    for index in range(1, 5):
        write_patient(root, f"patient{index:04d}")
    splits = tmp_path / "CAMUS_public" / "database_split"
    write_splits(splits, ["patient0001", "patient0003"], ["patient0004"], ["patient0002"])
    return root


def test_rows_follow_the_official_split_and_info_files(nifti_release):
    data = load_camus(nifti_release)
    assert {split: sorted(set(data[split]["patient"])) for split in data} == {
        "train": ["patient0001", "patient0003"],
        "validation": ["patient0004"],
        "test": ["patient0002"],
    }
    assert len(data["train"]) == 4 and sorted(data["test"]["view"]) == ["2CH", "4CH"]
    row = next(r for r in data["test"] if r["view"] == "4CH")
    # The info files count frames from 1; the rows index the sequence from 0.
    assert (row["ed_frame"], row["es_frame"], row["num_frames"]) == (0, FRAMES - 1, FRAMES)
    assert (row["ef"], row["edv"], row["esv"], row["age"]) == (50.5, 100.0, 48.0, 55.0)
    assert (row["sex"], row["image_quality"]) == ("F", "Good")
    folder = nifti_release.resolve() / "patient0002"
    assert row["es_label"] == str(folder / "patient0002_4CH_ES_gt.nii.gz")
    assert row["sequence"] == str(folder / "patient0002_4CH_half_sequence.nii.gz")
    assert CAMUS_LABELS[1] == "lv_cavity" and CAMUS_LABELS[3] == "left_atrium"


def test_nifti_arrays_come_back_as_height_width(nifti_release):
    row = load_camus(nifti_release)["train"][0]
    image, label = load_camus_images(row, "ED")
    assert image.shape == (HEIGHT, WIDTH) and image.dtype == np.uint8 and label.dtype == np.uint8
    # value = 9 * row + column: a transposed or flipped reader fails these.
    assert image[0, 8] == 8 and image[5, 0] == 45 and image[2, 3] == 21
    assert np.array_equal(label, frame_label()) and set(np.unique(label)) == {0, 1, 2, 3}
    assert label[5, 1] == 3 and label[1, 5] == 0
    _, es_label = load_camus_images(row, "ES")
    assert np.array_equal(es_label, np.roll(frame_label(), FRAMES - 1, axis=1))
    sequence, sequence_label = load_camus_images(row, "sequence")
    assert sequence.shape == (FRAMES, HEIGHT, WIDTH)
    assert sequence[2, 0, 8] == 28 and sequence_label[3, 5, 4] == 3


def test_nibabel_and_simpleitk_agree_on_the_order():
    # A NIfTI written by SimpleITK from a (T, H, W) array stores x first: nibabel sees (W, H, T), and the reader
    # gives back SimpleITK's (T, H, W) array.
    sequence = np.stack([frame_image(10 * t) for t in range(FRAMES)])
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "sequence.nii.gz"
        sitk.WriteImage(sitk.GetImageFromArray(sequence), str(path))
        assert nibabel.load(str(path)).shape == (WIDTH, HEIGHT, FRAMES)
        assert np.array_equal(read_camus_image(path), sequence)
        frame = Path(folder) / "frame.nii.gz"
        sitk.WriteImage(sitk.GetImageFromArray(frame_label()), str(frame))
        assert np.array_equal(read_camus_image(frame), frame_label())


def test_first_release_metaimage(tmp_path):
    root = tmp_path / "training"
    for index in range(1, 4):
        write_patient(root, f"patient{index:04d}", fmt="metaimage")
    assert (root / "patient0001" / "patient0001_2CH_ED.raw").is_file()
    data = load_camus(root, views=("2CH",), split_fractions=(1 / 3, 1 / 3, 1 / 3))
    assert [len(split) for split in data.values()] == [1, 1, 1]
    row = data["train"][0]
    assert row["ed_image"].endswith("_2CH_ED.mhd") and row["sequence"].endswith("_2CH_sequence.mhd")
    assert row["sequence_label"] == ""
    image, label = load_camus_images(row, "ED")  # stored (1, H, W): the frame axis is dropped
    assert image.shape == (HEIGHT, WIDTH) and image[0, 8] == 8 and image[5, 0] == 45
    assert np.array_equal(label, frame_label())
    sequence, none = load_camus_images(row, "sequence")
    assert sequence.shape == (FRAMES, HEIGHT, WIDTH) and sequence[3, 1, 0] == 39 and none is None
    (root / "patient0003" / "patient0003_2CH_ES_gt.raw").unlink()
    with pytest.raises(ManifestError, match=r"patient0003_2CH_ES_gt\.mhd is not a readable MetaImage"):
        load_camus(root, views=("2CH",), verify=True)
    (root / "patient0003" / "patient0003_2CH_ES_gt.mhd").unlink()
    with pytest.raises(ManifestError, match=r"1 rows with a missing file: patient0003/patient0003_2CH_ES_gt\.mhd"):
        load_camus(root, views=("2CH",))


def test_seeded_split_keeps_a_patients_views_together(tmp_path):
    for index in range(1, 11):
        write_patient(tmp_path, f"patient{index:04d}", views=("2CH", "4CH"))
    data = load_camus(tmp_path, seed=0)
    patients = {split: set(data[split]["patient"]) for split in data}
    assert [len(patients[s]) for s in ("train", "validation", "test")] == [8, 1, 1]
    assert [len(data[s]) for s in ("train", "validation", "test")] == [16, 2, 2]
    assert set.union(*patients.values()) == {f"patient{i:04d}" for i in range(1, 11)}
    again = load_camus(tmp_path, seed=0)
    assert set(again["test"]["patient"]) == patients["test"]
    others = [set(load_camus(tmp_path, seed=seed)["test"]["patient"]) for seed in (1, 2, 3)]
    assert any(other != patients["test"] for other in others)
    # Shares that do not divide the patients: floors (5, 2, 2), and the patient left over goes to training.
    uneven = load_camus(tmp_path, views=("4CH",), split_fractions=(0.5, 0.25, 0.25))
    assert [len(uneven[s]) for s in ("train", "validation", "test")] == [6, 2, 2]


def test_every_layout_problem_is_listed_with_its_file(nifti_release):
    (nifti_release / "patient0001" / "patient0001_2CH_ES_gt.nii.gz").unlink()
    (nifti_release / "patient0002" / "Info_4CH.cfg").write_text("ED: 1\nES: x\nNbFrame: 4\nLVef: 55\n")
    (nifti_release / "patient0003" / "Info_2CH.cfg").write_text("ED: 1\nES: 9\nNbFrame: 4\nno colon here\n")
    (nifti_release / "patient0004" / "Info_4CH.cfg").unlink()
    write_patient(nifti_release, "patient0005", views=("2CH", "4CH"))  # in no split file
    with pytest.raises(ManifestError) as caught:
        load_camus(nifti_release)
    message = str(caught.value)
    assert "2 rows with a missing file: patient0001/patient0001_2CH_ES_gt.nii.gz, patient0004/Info_4CH.cfg" in message
    assert "patient0002/Info_4CH.cfg (ES 'x' is not a whole number >= 1)" in message
    assert "patient0003/Info_2CH.cfg (line 4 is not `Key: value`: 'no colon here'; ES 9 is beyond NbFrame 4)" in message
    assert "2 rows with a patient in none of the split files" in message and "patient0005 2CH" in message
    assert len(caught.value.problems) == 3  # one line per kind of problem
    # strict=False skips those rows (and logs them): 10 rows, 6 bad.
    data = load_camus(nifti_release, strict=False)
    kept = sorted((row["patient"], row["view"]) for split in data.values() for row in split)
    assert kept == [("patient0001", "4CH"), ("patient0002", "2CH"), ("patient0003", "4CH"), ("patient0004", "2CH")]


def test_listed_patient_without_a_folder(nifti_release):
    write_splits(nifti_release.parent / "database_split", ["patient0001", "patient0003", "patient0009"],
                 ["patient0004"], ["patient0002"])
    with pytest.raises(ManifestError, match=r"2 rows with a missing file: patient0009/patient0009_2CH_ED\.nii\.gz"):
        load_camus(nifti_release)


def test_bad_arrays_name_the_file(nifti_release):
    folder = nifti_release / "patient0001"
    bad_label = frame_label()
    bad_label[0, 0] = 5
    write_nifti(folder / "patient0001_2CH_ED_gt.nii.gz", bad_label)
    write_nifti(folder / "patient0001_2CH_ES_gt.nii.gz", frame_label()[:, :8])
    write_nifti(folder / "patient0001_4CH_half_sequence.nii.gz", np.stack([frame_image()] * 3))
    (folder / "patient0001_4CH_ES.nii.gz").write_bytes(b"not a nifti file")
    rows = {row["view"]: row for row in load_camus(nifti_release)["train"] if row["patient"] == "patient0001"}
    with pytest.raises(ManifestError, match=r"patient0001_2CH_ED_gt\.nii\.gz has label values \[5\] outside 0-3"):
        load_camus_images(rows["2CH"], "ED")
    with pytest.raises(ManifestError, match=r"2CH_ES_gt\.nii\.gz has shape \(6, 8\), its image .* \(6, 9\)"):
        load_camus_images(rows["2CH"], "ES")
    with pytest.raises(ManifestError, match=r"patient0001_4CH_half_sequence\.nii\.gz has 3 frames; .* NbFrame 4"):
        load_camus_images(rows["4CH"], "sequence")
    with pytest.raises(ManifestError, match=r"patient0001_4CH_ES\.nii\.gz is not a readable NIfTI image"):
        load_camus_images(rows["4CH"], "ES")
    with pytest.raises(ValueError, match="phase must be one of"):
        load_camus_images(rows["4CH"], "middle")
    # verify=True finds all of them at load time, in one error.
    with pytest.raises(ManifestError, match="2 rows with an unreadable or inconsistent image") as caught:
        load_camus(nifti_release, verify=True)
    assert "label values [5]" in str(caught.value) and "not a readable NIfTI" in str(caught.value)
    assert "has 3 frames" in str(caught.value) and "has shape (6, 8)" in str(caught.value)


def test_info_file_and_folder_errors(tmp_path):
    cfg = tmp_path / "Info_2CH.cfg"
    cfg.write_text("ED: 1\n\nES: 18\nNbFrame: 18\nImageQuality: Poor\n")
    assert read_camus_cfg(cfg) == {"ED": "1", "ES": "18", "NbFrame": "18", "ImageQuality": "Poor"}
    cfg.write_text("ED 1\n")
    with pytest.raises(ManifestError, match=r"Info_2CH.cfg: line 1 is not `Key: value`"):
        read_camus_cfg(cfg)
    with pytest.raises(ManifestError, match="CAMUS folder not found"):
        load_camus(tmp_path / "absent")
    with pytest.raises(ManifestError, match="holds no patientNNNN folders"):
        load_camus(tmp_path)
    with pytest.raises(ManifestError, match="CAMUS image not found"):
        read_camus_image(tmp_path / "patient0001_2CH_ED.nii.gz")
    with pytest.raises(ValueError, match="views must be some of"):
        load_camus(tmp_path, views=("3CH",))

"""A small synthetic EchoNet-Dynamic folder shared by the data tests."""

import pytest

from discovr.data.synthetic import make_synthetic_echonet


@pytest.fixture(scope="session")
def synthetic_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("synthetic_echonet")
    make_synthetic_echonet(root, num_videos=6, seed=7, min_seconds=2.0, max_seconds=2.6, progress=False)
    return root


@pytest.fixture(scope="session")
def synthetic_gray(synthetic_root):
    """Every synthetic video decoded once: FileName -> (grayscale frames (T, H, W) as float, metadata)."""
    import pandas as pd

    from discovr.video_processing_discovr import read_video

    decoded = {}
    for name in pd.read_csv(synthetic_root / "FileList.csv").FileName:
        frames, metadata = read_video(synthetic_root / "Videos" / f"{name}.avi")
        decoded[name] = (frames.float().mean(dim=1), metadata)
    return decoded


@pytest.fixture(scope="session")
def echo_scene():
    """A synthetic scanner screen (288x320): the echo sector, burned-in text and a moving ECG trace, 40 frames."""
    from discovr.data.synthetic_dicom import render_echo_scene

    return render_echo_scene(num_frames=40, seed=3)

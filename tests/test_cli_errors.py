"""Every console script reports a user's mistake as one line, `discovr-<cmd>: error: ...`, with exit status 2;
a bug stays a traceback."""

from __future__ import annotations

from pathlib import Path

import pytest

from discovr import convert_discovr_original_to_hf
from discovr.inference import cluster_maps, predict
from discovr.data import prepare, synthetic
from discovr.training import evaluate_representations, finetune, pretrain, segment

SCRIPTS = {
    "discovr-pretrain": pretrain.main,
    "discovr-finetune": finetune.main,
    "discovr-eval": evaluate_representations.main,
    "discovr-predict": predict.main,
    "discovr-cluster-maps": cluster_maps.main,
    "discovr-convert": convert_discovr_original_to_hf.main,
    "discovr-prepare": prepare.main,
    "discovr-synth": synthetic.main,
    "discovr-segment": segment.main,
}


@pytest.fixture
def places(tmp_path, synthetic_echonet, tiny_encoder_dir, tiny_config_file) -> dict[str, Path]:
    """Paths the cases use: missing ones, a folder with no model, a manifest without its columns, valid data."""
    empty = tmp_path / "not_a_model"
    empty.mkdir()
    bad_root = tmp_path / "bad_manifest"
    (bad_root / "Videos").mkdir(parents=True)
    (bad_root / "FileList.csv").write_text("Name,Value\nclip,1\n")
    text = tmp_path / "notes.txt"
    text.write_text("not a checkpoint")
    archive = tmp_path / "archive"
    archive.mkdir()
    return {
        "missing": tmp_path / "does_not_exist", "empty": empty, "bad_root": bad_root,
        "bad_csv": bad_root / "FileList.csv", "text": text, "archive": archive, "out": tmp_path / "out",
        "data": synthetic_echonet, "encoder": tiny_encoder_dir, "config": tiny_config_file,
        "video": next((synthetic_echonet / "Videos").glob("*.avi")),
    }


CASES = {
    # (script, what is wrong): (argv with {place} filled in, the place the one-line message must name)
    ("discovr-pretrain", "path"): ("--data_root {missing} --output_dir {out} --config {config}", "missing"),
    ("discovr-pretrain", "model"): (
        "--data_root {data} --output_dir {out} --init_from {empty} --config {config}", "empty"),
    ("discovr-pretrain", "manifest"): ("--data_root {bad_root} --output_dir {out} --config {config}", "bad_root"),
    ("discovr-finetune", "path"): (
        "--data_root {missing} --output_dir {out} --model_name_or_path {encoder}", "missing"),
    ("discovr-finetune", "model"): ("--data_root {data} --output_dir {out} --model_name_or_path {empty}", "empty"),
    ("discovr-finetune", "manifest"): (
        "--data_root {bad_root} --output_dir {out} --model_name_or_path {encoder}", "bad_root"),
    ("discovr-eval", "path"): ("--data_root {missing} --output_dir {out} --model_name_or_path {encoder}", "missing"),
    ("discovr-eval", "model"): ("--data_root {data} --output_dir {out} --model_name_or_path {missing}", "missing"),
    ("discovr-eval", "manifest"): (
        "--data_root {bad_root} --output_dir {out} --model_name_or_path {encoder}", "bad_root"),
    ("discovr-predict", "path"): ("{encoder} {missing}.csv --output {out}/p.csv", "missing"),
    ("discovr-predict", "model"): ("{empty} {video} --output {out}/p.csv", "empty"),
    ("discovr-predict", "manifest"): ("{encoder} {bad_csv} --output {out}/p.csv", "bad_csv"),
    ("discovr-cluster-maps", "path"): ("{missing} {video} --output_dir {out}", "missing"),
    ("discovr-cluster-maps", "model"): ("{empty} {video} --output_dir {out}", "empty"),
    # An encoder folder has no decoder or prototypes: the maps would come from random weights.
    ("discovr-cluster-maps", "encoder only"): ("{encoder} {video} --output_dir {out}", "encoder"),
    ("discovr-convert", "path"): ("--checkpoint_path {missing}.pth --output_dir {out}", "missing"),
    ("discovr-convert", "model"): ("--checkpoint_path {text} --output_dir {out}", "text"),
    ("discovr-prepare", "path"): ("{missing} {out}", "missing"),
    ("discovr-prepare", "manifest"): ("{archive} {out} --labels {bad_csv}", "bad_csv"),
    ("discovr-synth", "path"): ("{text}/videos --num_videos 2", "text"),
    ("discovr-segment", "path"): (
        "train --data_root {missing} --output_dir {out} --model_name_or_path {encoder}", "missing"),
    ("discovr-segment", "model"): ("train --data_root {data} --output_dir {out} --model_name_or_path {empty}", "empty"),
    ("discovr-segment", "manifest"): (
        "train --data_root {bad_root} --output_dir {out} --model_name_or_path {encoder}", "bad_root"),
    # An encoder has no segmentation head: its masks would come from random weights.
    ("discovr-segment", "encoder only"): ("predict {encoder} {video} --output_dir {out}", "encoder"),
}


@pytest.mark.parametrize("script, wrong", sorted(CASES), ids=[f"{s}-{w}" for s, w in sorted(CASES)])
def test_user_errors_are_one_line_with_status_2(script, wrong, places, capsys):
    template, named = CASES[script, wrong]
    argv = template.format(**places).split()
    assert SCRIPTS[script](argv) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    line = err.strip().splitlines()[-1]
    prog = f"{script} {argv[0]}" if script == "discovr-segment" else script  # its subcommand names the program
    assert line.startswith(f"{prog}: error: "), err
    assert str(places[named]) in line, line


def test_a_bug_stays_a_traceback(monkeypatch, places):
    def broken(config):
        raise RuntimeError("a bug in the library")

    monkeypatch.setattr(finetune, "finetune", broken)
    with pytest.raises(RuntimeError, match="a bug in the library"):
        finetune.main(["--data_root", str(places["data"]), "--output_dir", str(places["out"]),
                       "--model_name_or_path", str(places["encoder"])])

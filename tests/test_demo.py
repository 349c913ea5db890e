"""`make demo` end to end at toy sizes: every stage runs and the summary compares DISCOVR with random init."""

import json

from discovr import demo


def test_demo_compares_pretrained_and_random_init(tmp_path, capsys):
    out = tmp_path / "demo"
    assert demo.main(["--output_dir", str(out), "--num_videos", "14", "--pretrain_epochs", "1",
                      "--finetune_epochs", "1"]) == 0

    summary = json.loads((out / "summary.json").read_text())
    assert set(summary["lvef_test_mae"]) == {"DISCOVR", "random init"}
    for row in summary["lvef_test_mae"].values():
        assert row["frozen ridge MAE"] >= 0 and row["fine-tuned MAE"] >= 0
    assert {"2. pretraining", "3. ridge probe, DISCOVR", "3. fine-tuning, random init"} <= set(summary["timings_s"])
    assert (out / "pretrain" / "encoder" / "config.json").is_file()
    assert (out / "random_encoder" / "config.json").is_file()
    assert (out / "plots" / "pretraining_curves.png").is_file()
    printed = capsys.readouterr().out
    assert "What pretraining buys" in printed and "random init" in printed

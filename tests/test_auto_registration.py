"""Auto classes resolve to DISCOVR offline, and `trust_remote_code` works without the package."""

import json
import os
import subprocess
import sys
import textwrap

import torch
from transformers import AutoConfig, AutoModel, AutoModelForVideoClassification

from discovr import DiscovrConfig, DiscovrForVideoClassification, DiscovrModel

from discovr_testing import tiny_config_kwargs


def test_auto_classes_resolve_from_a_local_directory(tmp_path):
    config = DiscovrConfig(**tiny_config_kwargs(num_labels=1, problem_type="regression"))
    DiscovrForVideoClassification(config).save_pretrained(tmp_path)
    assert isinstance(AutoConfig.from_pretrained(tmp_path), DiscovrConfig)
    assert type(AutoModelForVideoClassification.from_pretrained(tmp_path)) is DiscovrForVideoClassification
    # The base model loads from a head checkpoint through `base_model_prefix`.
    encoder, info = AutoModel.from_pretrained(tmp_path, output_loading_info=True)
    assert type(encoder) is DiscovrModel and not info["missing_keys"]


def test_saved_config_carries_auto_map(tmp_path):
    DiscovrModel(DiscovrConfig(**tiny_config_kwargs())).save_pretrained(tmp_path)
    saved = json.loads((tmp_path / "config.json").read_text())
    assert saved["model_type"] == "discovr"
    assert saved["auto_map"]["AutoConfig"] == "configuration_discovr.DiscovrConfig"
    assert saved["auto_map"]["AutoModel"] == "modeling_discovr.DiscovrModel"
    assert (tmp_path / "modeling_discovr.py").is_file() and (tmp_path / "configuration_discovr.py").is_file()


def test_trust_remote_code_without_the_package(tmp_path):
    config = DiscovrConfig(**tiny_config_kwargs())
    model = DiscovrModel(config).eval()
    model_dir = tmp_path / "model"
    model.save_pretrained(model_dir)
    pixel_values = torch.randn(1, config.num_frames, 3, config.image_size, config.image_size)
    torch.save(pixel_values, tmp_path / "input.pt")
    with torch.no_grad():
        torch.save(model(pixel_values).last_hidden_state, tmp_path / "expected.pt")

    script = textwrap.dedent(
        f"""
        import sys
        sys.modules["discovr"] = None  # any `import discovr` now fails
        import torch
        from transformers import AutoModel
        model = AutoModel.from_pretrained({str(model_dir)!r}, trust_remote_code=True).eval()
        assert type(model).__module__.startswith("transformers_modules"), type(model).__module__
        with torch.no_grad():
            out = model(torch.load({str(tmp_path / "input.pt")!r})).last_hidden_state
        torch.testing.assert_close(out, torch.load({str(tmp_path / "expected.pt")!r}))
        print("remote-code-ok", type(model).__name__)
        """
    )
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_MODULES_CACHE": str(tmp_path / "modules")}
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, env=env, cwd=tmp_path, timeout=300
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "remote-code-ok DiscovrModel" in result.stdout

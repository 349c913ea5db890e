"""The notebooks run top to bottom (executed with nbclient) and are committed without outputs."""

import os
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

NOTEBOOKS = Path(__file__).resolve().parents[1] / "notebooks"


def execute(name: str, output_dir: Path, reference_root: Path | None = None) -> nbformat.NotebookNode:
    notebook = nbformat.read(NOTEBOOKS / name, as_version=4)
    env_backup = dict(os.environ)
    os.environ.update({"DISCOVR_NOTEBOOK_OUTPUT": str(output_dir), "HF_HUB_OFFLINE": "1"})
    if reference_root is not None:
        os.environ["DISCOVR_REFERENCE_FIXTURE"] = str(reference_root)
    try:
        NotebookClient(notebook, timeout=600, kernel_name="python3",
                       resources={"metadata": {"path": str(NOTEBOOKS)}}).execute()
    finally:
        os.environ.clear()
        os.environ.update(env_backup)
    return notebook


def outputs_text(notebook: nbformat.NotebookNode) -> str:
    return "\n".join(
        output.get("text", "") for cell in notebook.cells if cell.cell_type == "code" for output in cell.outputs
    )


@pytest.mark.parametrize("path", sorted(NOTEBOOKS.glob("*.ipynb")), ids=lambda p: p.name)
def test_notebooks_are_committed_without_outputs(path):
    notebook = nbformat.read(path, as_version=4)
    for cell in notebook.cells:
        if cell.cell_type == "code":
            assert not cell.outputs and cell.execution_count is None, f"{path.name} has stored outputs"


def test_convert_reference_checkpoint_notebook(tmp_path, reference):
    notebook = execute("02_convert_reference_checkpoint.ipynb", tmp_path, reference.root)
    text = outputs_text(notebook)
    assert "max |ours - published|" in text
    assert (tmp_path / "encoder" / "model.safetensors").is_file()
    assert (tmp_path / "pretraining" / "model.safetensors").is_file()


def test_quickstart_notebook(tmp_path):
    notebook = execute("01_quickstart.ipynb", tmp_path)
    text = outputs_text(notebook)
    assert "'label': 'LVEF'" in text
    for path in ("pretrain/encoder/model.safetensors", "finetune/predictions.csv", "finetune/lvef_scatter.png",
                 "plots/pretraining_curves.png"):
        assert (tmp_path / path).is_file(), path
    images = [o for c in notebook.cells if c.cell_type == "code" for o in c.outputs if "image/png" in o.get("data", {})]
    assert len(images) == 3

# Set-up is part of every target: a fresh clone needs nothing but `make test` or `make demo`.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
export HF_HUB_OFFLINE := 1
export TOKENIZERS_PARALLELISM := false

.PHONY: install ffmpeg test test-all demo bench bench-ssl bench-seg clean

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip

ffmpeg:
	@if command -v ffmpeg >/dev/null 2>&1; then :; \
	elif command -v apt-get >/dev/null 2>&1; then \
		echo "Installing FFmpeg with apt-get (needed by torchcodec)"; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends ffmpeg >/dev/null; \
	else \
		echo "FFmpeg is missing and apt-get is unavailable: install FFmpeg (shared libraries and the ffmpeg binary) with your system's package manager, then re-run make." >&2; \
		exit 1; \
	fi

$(STAMP): $(PY) setup.cfg constraints.txt pyproject.toml
	$(MAKE) ffmpeg
	$(PY) -m pip install --quiet -c constraints.txt -e ".[dev,bench,dicom,camus]"
	touch $(STAMP)

install: $(STAMP)

test: install
	$(PY) -m pytest -q

test-all: install
	$(PY) -m pytest -q -m ""

demo: install
	$(PY) -m discovr.demo

bench: install
	$(PY) -m benchmarks.run_all

# Pretraining quality: DISCOVR against random init and VideoMAE on frozen probes and fine-tuning (about 2.5 h on
# 2 CPU cores; finished runs are kept, so an interrupted run resumes).
bench-ssl: install
	$(PY) -m benchmarks.representation_quality

# Segmentation probe on the encoders bench-ssl pretrained (about 5 min on 2 cores once they exist; with none, it
# names the bench-ssl command that makes them).
bench-seg: install
	$(PY) -m benchmarks.segmentation_probe

clean:
	rm -rf $(VENV) demo_output .pytest_cache

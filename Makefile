# The two commands a reader needs: `make pdf` and `make test`. The first make of any
# target creates .venv and installs the package into it (remembered in .venv/.installed).
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

.PHONY: pdf preview test export export-check lint clean bench doctor train

$(STAMP): pyproject.toml
	@$(PYTHON) mlxllm/press/system.py
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	@touch $(STAMP)

pdf: $(STAMP) export
	MLXLLM_PROFILE=book $(PY) -m mlxllm.press pdf

# One chapter's pages: `make preview CH=07` writes build/preview-07.pdf, running the chapter
# (and those whose files it reads) only when its cached run is out of date.
preview: $(STAMP) export
	@test -n "$(CH)" || { echo "usage: make preview CH=07" >&2; exit 2; }
	MLXLLM_PROFILE=$${MLXLLM_PROFILE:-book} $(PY) -m mlxllm.press preview $(CH)

test: $(STAMP)
	MLXLLM_PROFILE=smoke $(PY) -m pytest -q

export: $(STAMP)
	$(PY) -m mlxllm.press export

export-check: $(STAMP)
	$(PY) -m mlxllm.press export-check

lint: $(STAMP)
	$(PY) -m ruff check mlxllm tests bench book

doctor: $(STAMP)
	$(VENV)/bin/mlxllm doctor

# The book's full Shakespeare model into runs/full; `make train TRAIN_ARGS=--resume` continues it.
train: $(STAMP)
	$(VENV)/bin/mlxllm train --preset full $(TRAIN_ARGS)

bench: $(STAMP)
	$(PY) bench/press.py

clean:
	rm -rf build

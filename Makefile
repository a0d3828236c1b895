# Two commands for readers and CI (see README.md):
#   make book   build the HTML book, every chapter executed
#   make test   ruff, unit tests, nbval over every chapter, strict book build, page
#               checks on the built HTML and in headless Chromium
# Both create or reuse the virtual environment .venv and install what they need.

VENV   ?= .venv
PYTHON ?= python3
PY     := $(VENV)/bin/python
JB     := $(VENV)/bin/jupyter-book

export TF_ENABLE_ONEDNN_OPTS := 0
export TF_CPP_MIN_LOG_LEVEL  := 2
export PYTHONHASHSEED        := 0
export PYDEVD_DISABLE_FILE_VALIDATION := 1
# One thread per process for OpenMP (scikit-learn's trees) and BLAS: tests and chapters run
# in two processes on two cores, and threads that spin-wait for a busy core make a
# two-minute chapter take ten. Set for every target, so that the book and the tests
# compute with the same thread counts and print the same numbers.
export OMP_NUM_THREADS := 1
export OPENBLAS_NUM_THREADS := 1
export MKL_NUM_THREADS := 1
# TensorFlow likewise: one thread inside an op and one between ops. With two processes on
# two cores, its default pools (a thread per core each) only contend: measured on the
# unit tests, 269 s against 297 s of wall time, and 10.7 s against 15.1 s of CPU time for
# two epochs of matrix factorisation run beside a second copy.
export TF_NUM_INTRAOP_THREADS := 1
export TF_NUM_INTEROP_THREADS := 1
# trained-model results shared by nbval and the book build (keyed by code and data hash)
export COMPANION_RESULTS_CACHE := $(abspath _build/results_cache)
export PATH := $(abspath $(VENV))/bin:$(PATH)

.PHONY: install book test lint unit nbval book-strict check-pages check-render clean lab

# each stage notes when it started in _build/stage-times.txt (.ci/run prints the file last,
# so the tail of a CI log tells where the time went)
STAMP = @mkdir -p _build && echo "$@ started $$(date -u +%H:%M:%S)" >> _build/stage-times.txt

# uv installs the same packages as pip in a third of the time (pip is the fallback)
EXTRAS := book,test,deep,rank,serve,tune,spark,data
$(VENV)/.stamp-install: pyproject.toml
	$(STAMP)
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip uv
	$(VENV)/bin/uv pip install --quiet --python $(PY) -e ".[$(EXTRAS)]" \
		|| $(PY) -m pip install --quiet -e ".[$(EXTRAS)]"
	touch $@

install: $(VENV)/.stamp-install

book: install
	$(JB) build . --keep-going
	$(PY) tools/check_book.py

test: install lint unit nbval book-strict check-pages check-render

lint: install
	$(STAMP)
	$(VENV)/bin/ruff check companion tests tools benchmarks book/_ext book/conftest.py
	$(PY) tools/check_asserts.py

# -n 2 --dist loadfile: two worker processes (the machine's two cores), each taking whole
# files, so module fixtures and a chapter's cells stay in one process and in order
unit: install
	$(STAMP)
	$(PY) -m pytest -q -p no:cacheprovider -n 2 --dist loadfile tests

# --book-cache: each chapter whose cells all pass is stored, executed, in the book's
# jupyter-cache, so book-strict takes it from there instead of executing it again
# (book/conftest.py, tools/book_cache.py).
# Chapters run in two pytest processes (the machine's two cores), each taking whole
# files in order, so a chapter's cells stay in one kernel. The split is fixed by the
# chapters' cold times under this two-process run, measured locally on 2026-12-07 (5.5
# 1,140 s, 6.3 575, 5.6 402, 6.6 326, 8 275, 6.1 264, 3.8 244, 6.4 212, ...): 2,238 s
# against 1,945 s before 3.6 and 3.7 moved to the second list; 3.5 moved to the first
# when 5.5 and 6.6 got cheaper. A new chapter goes to the second list until it is
# measured. (pytest-xdist's --dist loadfile cannot do this: it hands out files by their
# number of cells, so the longest chapter, with few cells, started last and ran alone.)
NBVAL_ALL := $(sort $(shell grep -l '^kernelspec:' book/*.md))
NBVAL_A   := $(filter $(NBVAL_ALL),$(addprefix book/,05b_deep_recommenders.md \
	03f_monitoring_compression.md 06d_content_context.md 06f_ad_copy.md 07b_scale_out.md \
	06b_after_sales.md 05_recommenders.md 03c_optimisers_training.md \
	04_mathematics.md 07_tools.md 01_background.md))
NBVAL_B   := $(filter-out $(NBVAL_A),$(NBVAL_ALL))
NBVAL     := $(PY) -m pytest -q -p no:cacheprovider --nbval-lax --nbval-current-env \
	--nbval-cell-timeout=1800 --book-cache --durations=40

nbval: install
	$(STAMP)
	mkdir -p _build
	$(NBVAL) $(NBVAL_A) > _build/nbval-a.log 2>&1 & a=$$!; \
	$(NBVAL) $(NBVAL_B); b=$$?; \
	wait $$a; a=$$?; \
	echo "--- second process (see _build/nbval-a.log) ---"; cat _build/nbval-a.log; \
	test $$a -eq 0 && test $$b -eq 0

book-strict: install
	$(STAMP)
	$(JB) build . -W -n --keep-going

check-pages: install
	$(STAMP)
	$(PY) tools/check_book.py

# Every page rendered in headless Chromium with no network (Debian's chromium package;
# .ci/run installs it): maths typeset, the page rules on the DOM, a screenshot per page in
# _build/render/.
check-render: install
	$(STAMP)
	$(PY) tools/check_render.py

clean:
	rm -rf _build

# Open the book in JupyterLab: each .md chapter opens as a notebook on this environment's
# kernel, with COMPANION_DATA_DIR set (tools/lab.py). Installs JupyterLab and Jupytext into
# .venv on first use. LAB_ARGS="--no-browser --port 8899" passes options to JupyterLab.
lab: install
	$(PY) -m pip install --quiet -e ".[lab]"
	$(PY) tools/lab.py $(LAB_ARGS)

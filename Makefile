# Set-up and everyday commands. Each target installs what it needs.
PYTHON ?= python3
PIP = $(PYTHON) -m pip

.PHONY: install demo bench test lint fuzz

# torch is pinned to the exact CPU build used in development and CI; any
# looser spec could make pip fetch a multi-GB CUDA build.
install:
	$(PIP) install -q "torch==2.13.0"
	$(PIP) install -q -e ".[torch,images,test,dev,bench,charts]"

# The main job: write sample datasets, read them back through a DataLoader,
# and print the benchmark tables (about 20 minutes on 2 cores, install excluded).
demo: install
	$(PYTHON) -m benchmarks.run --quick

# The full benchmark (about 20 minutes on 2 cores, a few GB of temporary files),
# with the chart of its core table in docs/ (its figures as JSON beside it).
bench: install
	$(PYTHON) -m benchmarks.run --chart docs/benchmark.png

# Not for CI: writes a file of ~30 GB of 16 KB rows under the temporary folder
# (removed afterwards; refused without 40 GB free), beside a sequential write
# of the same size, then appends 100k rows to text files of 1M and 10M rows.
# About 4 minutes on 2 cores (the disk's speed varies 2x from minute to minute).
.PHONY: bench-scale
bench-scale: install
	$(PYTHON) -m benchmarks.write --scale-gb 30

lint:
	$(PYTHON) -m ruff check h5record tests benchmarks
	$(PYTHON) -m ruff format --check h5record tests benchmarks

# The reader on 300 damaged and hostile files, in a build with AddressSanitizer
# and bounds checks (about a minute on 2 cores, the build included). Skipped,
# with a message, where the C compiler has no AddressSanitizer runtime.
fuzz: install
	$(PYTHON) tests/fuzz/run_asan.py --cases 300

test: install lint
	$(PYTHON) -m pytest -q -m "not slow"
	$(PYTHON) tests/fuzz/run_asan.py --cases 300

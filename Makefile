# asyncpipe — everyday commands. `make demo` and `make test` are all a fresh machine needs.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

A ?=
B ?=
MODEL ?=
OUT ?= report
DIR ?=
ARGS ?=
CACHE ?=

.PHONY: install browser test test-fast demo lint format bench bench-batch bench-local bench-cost compare pairs report clean

# llama-cpp-python compiles llama.cpp from source (no binary wheel on PyPI). Build only what asyncpipe
# loads: no multimodal library (LLAVA_BUILD=OFF), no llama.cpp "common" library nor its HTTP client
# (cmake/llama-lean.cmake), about half the compiler work of the default build. GGML_NATIVE=OFF builds the
# CPU kernels for x86-64 with AVX2/FMA/F16C (llama.cpp's choice once NATIVE is off) rather than for the
# CPU that compiles them, so the library runs on any AVX2 machine (the embedded model's slow tests,
# tests/test_local_model.py and tests/test_llama_server.py, pass with it on an AVX-512 machine). Override with
# `make install LLAMA_CMAKE_ARGS=...`; an empty value builds llama-cpp-python's default.
LLAMA_CMAKE_ARGS ?= -DLLAVA_BUILD=OFF -DCMAKE_PROJECT_llama.cpp_INCLUDE=$(CURDIR)/cmake/llama-lean.cmake -DGGML_NATIVE=OFF

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	CMAKE_ARGS="$(LLAMA_CMAKE_ARGS)" $(BIN)/pip install --quiet -e '.[test]'
	touch $(STAMP)

install: $(STAMP)  ## create .venv and install asyncpipe with its test extras

# The report's browser test opens index.html in Debian's headless Chromium (never a downloaded build).
browser:
	@command -v chromium >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    echo "installing Debian's chromium for the report's browser test"; \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; \
	  else echo "chromium not installed (and not root): the browser test will be skipped"; fi; }

test: $(STAMP) browser  ## run the whole test suite (fake API server, embedded model, real llama.cpp server, browser)
	$(BIN)/python -m pytest -q

test-fast: $(STAMP)  ## skip the slow tests that run the embedded model
	$(BIN)/python -m pytest -q -m "not slow"

demo: $(STAMP)  ## run the whole job offline on the embedded model, on shipped example data
	$(BIN)/asyncpipe demo --output demo-report

lint: $(STAMP)
	$(BIN)/ruff check asyncpipe tests bench
	$(BIN)/ruff format --check asyncpipe tests bench

format: $(STAMP)
	$(BIN)/ruff format asyncpipe tests bench
	$(BIN)/ruff check --fix asyncpipe tests bench

bench: $(STAMP)  ## engine throughput, latency, rate-limit and memory benchmarks against a local stub; metrics at scale
	$(BIN)/python -m bench.bench_engine
	$(BIN)/python -m bench.bench_metrics

bench-batch: $(STAMP)  ## --batch-api: peak memory of 1,000,000 rows in batch mode, beside the online figure
	$(BIN)/python -m bench.bench_batch

bench-local: $(STAMP)  ## embedded model: prefix reuse against full evaluation, side by side
	$(BIN)/python -m bench.bench_local

bench-cost: $(STAMP)  ## dollars per comparison: every step scored in full against --patience and racing, on the fake server
	$(BIN)/python -m bench.bench_cost

# Several comparisons may run at once (make -j, or & in a shell), each with its own OUT; they may share
# one CACHE=file.sqlite (SQLite WAL: concurrent writers wait for each other, and every answer is kept).
compare: $(STAMP)  ## make compare A=a.jsonl B=b.jsonl MODEL=gpt-4o-mini OUT=report [CACHE=shared.sqlite]
	$(BIN)/asyncpipe compare $(A) $(B) $(if $(MODEL),--model $(MODEL)) --output $(OUT) $(if $(CACHE),--cache $(CACHE)) $(ARGS)

pairs: $(STAMP)  ## make pairs DIR=results/ruler_of_the_world MODEL=gpt-4o-mini OUT=pairs-report
	$(BIN)/asyncpipe pairs $(DIR) $(if $(MODEL),--model $(MODEL)) \
		--output $(if $(filter command line environment override,$(origin OUT)),$(OUT),pairs-report) $(if $(CACHE),--cache $(CACHE)) $(ARGS)

report: $(STAMP)  ## make report OUT=report — re-render a report directory, no API calls
	$(BIN)/asyncpipe report $(OUT)

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache demo-report

# Two commands matter: `make run` (the service on its embedded defaults) and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: run test test-fast bench lint venv clean image

$(STAMP): requirements.txt requirements-dev.txt
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	@$(BIN)/pip install -q --disable-pip-version-check -r requirements-dev.txt
	@touch $(STAMP)

venv: $(STAMP)

run: $(STAMP)
	@bash scripts/run.sh

test: $(STAMP)
	@bash scripts/test.sh

# The tests that need no Docker, PostgreSQL, Kafka or browser (not marked `services`, see
# tests/conftest.py). The services' addresses are taken away, so a test that reaches for one fails here.
test-fast: $(STAMP)
	@env -u TEST_DATABASE_URL -u DATABASE_URL -u TEST_KAFKA_BOOTSTRAP_SERVERS -u KAFKA_BOOTSTRAP_SERVERS -u TEST_KUBECONFIG \
		DOCKER_HOST=unix:///nonexistent/docker.sock \
		$(BIN)/python -m pytest tests -m "not services" -p no:cacheprovider -q --timeout=60 -W ignore::DeprecationWarning

image:
	@bash scripts/build-service-image.sh

bench: $(STAMP)
	@bash scripts/bench.sh

lint: $(STAMP)
	@$(BIN)/ruff check inference_app tests bench
	@$(BIN)/ruff format --check inference_app tests bench

clean:
	rm -rf $(VENV) instance .pytest_cache test-artifacts

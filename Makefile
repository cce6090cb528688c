# The two commands the README documents are `make test` and `make demo`.
.PHONY: test demo demo-down bench deps lint clean wheel

# Where `make wheel` writes the client's wheel (for a Kaggle dataset, or any pip).
DIST ?= dist

test:
	scripts/test.sh

deps:
	scripts/install-deps.sh

demo:
	scripts/demo.sh

demo-down:
	scripts/demo.sh down

bench:
	scripts/bench.sh

wheel: deps
	.venv/bin/pip wheel --quiet --no-deps --wheel-dir "$(DIST)" .

clean:
	rm -rf .venv node_modules .llm-limits bench-out dist

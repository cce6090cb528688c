# The two commands the README documents are `make test` and `make demo`.
.PHONY: test demo demo-down bench deps lint clean

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

clean:
	rm -rf .venv node_modules .llm-limits bench-out

"""``python -m llm_limits.cli``: the same as the ``llm-limits`` console script."""

from llm_limits.cli import main

main()

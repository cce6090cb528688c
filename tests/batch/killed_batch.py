"""A batch in a process of its own, for the test that kills it: ``python -m
tests.batch.killed_batch DB_URL BASE_URL CHECKPOINT ITEMS CONCURRENCY``.

The key values come from the environment (the test's ``hold``); the prompts are
``tests.batch.test_kill_and_resume.prompts(ITEMS)``.
"""

from __future__ import annotations

import sys

from llm_limits import Client, batch

from .conftest import MODEL
from .test_kill_and_resume import prompts


def main(db_url: str, base_url: str, checkpoint: str, items: str, concurrency: str) -> None:
    with Client(db_url, base_url=base_url, timeout=30.0) as client:
        batch(
            prompts(int(items)),
            model=MODEL,
            client=client,
            caller="killed-batch",
            db_url=db_url,
            checkpoint=checkpoint,
            concurrency=int(concurrency),
            progress=False,
        )


if __name__ == "__main__":
    main(*sys.argv[1:])

"""Every script in examples/ runs, as a user would run it, against a migrated database and the
fake Gemini: an API change that breaks one fails here.

Each example is a subprocess of its own, configured only through the environment variables the
README documents (LLM_LIMITS_DB_URL, GOOGLE_GEMINI_BASE_URL and the keys' env_var_name; the
gateway's notebook LLM_GATEWAY_URL and LLM_GATEWAY_TOKEN). The notebooks run as plain scripts
(jupytext percent cells are comments). Only the scripts at the top of examples/ are run here: a
directory under it (a whole application) brings its own tests.
"""

from __future__ import annotations

from pathlib import Path

from llm_limits.local.fake_gemini import FakeGemini

from ..client.support import Conn
from ..gateway.harness import Gateway, add_caller, launch
from .conftest import EXAMPLES, RunExample


def test_every_example_has_a_run_here() -> None:
    scripts = {path.name for path in EXAMPLES.glob("*.py")}
    tested = {name.removeprefix("test_") + ".py" for name in globals() if name.startswith("test_")}
    assert scripts <= tested, f"examples without a test here: {sorted(scripts - tested)}"


def test_bot_async(run_example: RunExample) -> None:
    run = run_example("bot_async.py", "Hello!", "What is a token bucket?")
    assert run.output.count("fake reply to:") == 2, run.output
    assert run.committed("bot") == 2


def test_kaggle_notebook(run_example: RunExample) -> None:
    run = run_example("kaggle_notebook.py")
    assert "keys held: ['a1', 'a2', 'b1']" in run.output
    assert run.output.count("-> fake reply to:") == 10, run.output
    assert run.committed("kaggle-notebook") == 11


def test_kaggle_batch_notebook(run_example: RunExample, tmp_path: Path) -> None:
    run = run_example("kaggle_batch_notebook.py")
    assert run.committed("festival-parser") == 40
    checkpoint = (tmp_path / "festival.jsonl").read_text().splitlines()
    assert sum('"ok"' in line for line in checkpoint) == 40


def test_kaggle_gateway_notebook(
    run_example: RunExample, keyed_db: Conn, db_url: str, fake: FakeGemini, tmp_path: Path
) -> None:
    token = add_caller(keyed_db, "kaggle-eval", ["gemma-3-27b"])
    gateway: Gateway = launch(db_url, fake.base_url, ("a1", "b1"), tmp_path / "gateway.log")
    try:
        run = run_example(
            "kaggle_gateway_notebook.py", "Привет!", "What is a token bucket?",
            LLM_GATEWAY_URL=gateway.url, LLM_GATEWAY_TOKEN=token,
        )  # fmt: skip
    finally:
        gateway.stop()
    assert run.output.count("-> 'fake reply to:") == 2, run.output
    assert "streamed: fake reply to: Привет!" in run.output
    assert run.committed("kaggle-eval") == 3
    assert token not in gateway.log()


def test_database_direct(run_example: RunExample) -> None:
    run = run_example("database_direct.py", "Hello!")
    assert run.output.strip() == "fake reply to: Hello!"
    assert run.calls == [("committed", "etl")]

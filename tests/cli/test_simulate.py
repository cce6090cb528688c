"""`llm-limits simulate`: a short load run on a shortened window reports no 429s."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest

from llm_limits.cli import chart as charts
from llm_limits.cli.chart import write_chart
from llm_limits.local.fake_gemini import FakeGemini, Limits
from tests.cli.conftest import Invoke

Conn = psycopg.Connection[tuple[Any, ...]]
KEYS = {"LLT_SIM_A1": "sim-a1-value", "LLT_SIM_A2": "sim-a2-value", "LLT_SIM_B1": "sim-b1-value"}
ENV: dict[str, str | None] = {**KEYS, "GOOGLE_API_KEY": None, "GOOGLE_API_LOCALNAME": None}
PNG = b"\x89PNG\r\n\x1a\n"


@pytest.fixture
def pool(cli: Invoke, db: Conn) -> Iterator[None]:
    """Two projects, three keys, and a 2 s window so runs span windows.

    The 500 ms guard covers the lag from a grant to the fake's clock reading the request: a 30 KB
    Russian page on a busy 2-core box can take longer than 100 ms to arrive (a TPM-bound run then
    met a 429 about one run in two), and with `make test`'s lanes side by side 300 ms was once
    too little. The runs that report no 429s are timing-sensitive (tests/conftest.py SERIAL).
    """
    db.execute("update public.google_ai_settings set window_ms = 2000, window_guard_ms = 500")
    cli("keys", "add", "sim-a1", "--env-var", "LLT_SIM_A1", "--group", "sim-project-a")
    cli("keys", "add", "sim-a2", "--env-var", "LLT_SIM_A2", "--group", "sim-project-a")
    cli("keys", "add", "sim-b1", "--env-var", "LLT_SIM_B1", "--group", "sim-project-b")
    yield


@pytest.fixture
def drawn(monkeypatch: pytest.MonkeyPatch) -> list[dict[str, Any]]:
    """What each run asked the chart to draw (it is still drawn)."""
    charts_drawn: list[dict[str, Any]] = []

    def spy(path: Path, **chart: Any) -> Path:
        charts_drawn.append(chart)
        return write_chart(path, **chart)

    monkeypatch.setattr(charts, "write_chart", spy)
    return charts_drawn


def report(stdout: str) -> dict[str, str]:
    return dict(
        line.split(": ", 1) for line in stdout.splitlines() if ": " in line and line[0] != " "
    )


def test_short_run_reports_no_429s_and_writes_the_chart(
    cli: Invoke, pool: None, tmp_path: Path, drawn: list[dict[str, Any]]
) -> None:
    chart = tmp_path / "sim.png"
    result = cli("simulate", "--workers", "6", "--duration", "8", "--latency", "0.05",
                 "--chart", str(chart), env=ENV)  # fmt: skip
    assert result.exit_code == 0, result.output
    lines = report(result.stdout)
    assert lines["429s"] == "0"
    assert int(lines["grants"]) > 0
    assert lines["tokens"].endswith("completion")
    assert lines["waits"].startswith("p50 ")
    assert "sim-project-a: " in result.stdout and "sim-project-b: " in result.stdout
    assert lines["chart"] == str(chart.resolve())
    assert chart.read_bytes()[:8] == PNG
    for value in KEYS.values():
        assert value not in result.output
    # Short prompts are bound by RPM: the chart draws grants against it.
    [drawing] = drawn
    assert drawing["metric"] == "requests"
    assert drawing["limits"] == {"sim-project-a": 30, "sim-project-b": 30}


def test_exit_1_when_the_server_answers_429(cli: Invoke, pool: None, tmp_path: Path) -> None:
    # A server stricter than the database: Google lowered a limit and nobody told us.
    strict = {"gemma-3-27b-it": Limits(rpm=3, tpm=15000, rpd=14400)}
    projects = {"sim-project-a": [KEYS["LLT_SIM_A1"], KEYS["LLT_SIM_A2"]],
                "sim-project-b": [KEYS["LLT_SIM_B1"]]}  # fmt: skip
    with FakeGemini(projects, strict) as server:
        result = cli("simulate", "--workers", "3", "--duration", "3", "--base-url",
                     server.base_url, "--chart", str(tmp_path / "c.png"), env=ENV)  # fmt: skip
        served = server.stats().rate_limited
    assert served > 0
    assert result.exit_code == 1, result.output
    assert int(report(result.stdout)["429s"]) > 0


def test_a_tpm_bound_run_of_long_russian_prompts(
    cli: Invoke, pool: None, tmp_path: Path, drawn: list[dict[str, Any]]
) -> None:
    # Russian pages of 8,000-30,000 characters: 2,300-8,600 tokens against TPM 15,000, which
    # the byte bound (15,000-55,000 "tokens") would refuse outright or mostly.
    result = cli("simulate", "--workers", "4", "--duration", "8", "--latency", "0.05",
                 "--prompt-chars", "8000-30000", "--chart", str(tmp_path / "tpm.png"),
                 env=ENV)  # fmt: skip
    assert result.exit_code == 0, result.output
    lines = report(result.stdout)
    assert lines["429s"] == "0"
    assert lines["errors"] == "0 (none)"
    assert int(lines["grants"]) > 0
    tpm = result.stdout.split("TPM used")[1]
    used = {}
    for group in ("sim-project-a", "sim-project-b"):
        used[group] = int(tpm.split(f"{group}: ")[1].split("/")[0].replace(",", ""))
        assert used[group] >= 2_000  # at least one long prompt went through

    # The chart of a TPM-bound run: each group's input tokens against its TPM, not grants.
    [chart] = drawn
    assert chart["metric"] == "tokens"
    assert chart["limits"] == {"sim-project-a": 15_000, "sim-project-b": 15_000}
    assert {g: sum(t for _, t in grants) for g, grants in chart["grants"].items()} == used
    assert (tmp_path / "tpm.png").read_bytes()[:8] == PNG


def test_chart_of_must_name_a_metric(cli: Invoke, pool: None) -> None:
    result = cli("simulate", "--duration", "1", "--chart-of", "bytes", env=ENV)
    assert result.exit_code == 2
    assert "--chart-of expects one of requests, tokens; got 'bytes'" in result.output


def test_prompt_chars_must_be_a_range(cli: Invoke, pool: None) -> None:
    result = cli("simulate", "--duration", "1", "--prompt-chars", "lots", env=ENV)
    assert result.exit_code != 0
    assert "--prompt-chars expects MIN-MAX" in result.output

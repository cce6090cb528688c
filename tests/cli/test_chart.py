"""The series `simulate` draws: grants per rolling window for RPM, their tokens for TPM."""

from __future__ import annotations

from pathlib import Path

from llm_limits.cli.chart import series, write_chart

PNG = b"\x89PNG\r\n\x1a\n"
START = 1_000.0
# (arrival, input tokens): three long prompts, then a short one after the first ages out.
GRANTS = [(START + 0.5, 4_000), (START + 1.0, 6_500), (START + 30.0, 4_200), (START + 61.0, 300)]


def at(xs: list[float], ys: list[int], x: float) -> int:
    return ys[xs.index(x)]


def test_a_tpm_series_sums_input_tokens_per_rolling_window() -> None:
    xs, ys = series(GRANTS, "tokens", START, START + 90, window_s=60, step=0.5)

    assert at(xs, ys, 0.0) == 0
    assert at(xs, ys, 1.0) == 4_000 + 6_500
    assert at(xs, ys, 30.0) == 4_000 + 6_500 + 4_200
    assert at(xs, ys, 60.5) == 6_500 + 4_200  # the first aged out at 60.5
    assert at(xs, ys, 61.0) == 4_200 + 300  # (1, 61]: the second is out, the fourth in
    assert at(xs, ys, 90.0) == 300


def test_an_rpm_series_counts_the_same_grants() -> None:
    xs, ys = series(GRANTS, "requests", START, START + 90, window_s=60, step=0.5)

    assert [at(xs, ys, x) for x in (0.0, 1.0, 30.0, 60.5, 61.0, 90.0)] == [0, 2, 3, 2, 2, 1]


def test_the_chart_renders_both_kinds(tmp_path: Path) -> None:
    for metric, limit in (("requests", 30), ("tokens", 15_000)):
        path = write_chart(
            tmp_path / f"{metric}.png",
            title=metric,
            grants={"project-a": GRANTS, "project-b": GRANTS[:2]},
            limits={"project-a": limit, "project-b": limit},
            metric=metric,
            start=START,
            end=START + 90,
            window_s=60,
        )
        assert path.read_bytes()[:8] == PNG

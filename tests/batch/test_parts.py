"""The batch runner's parts that need no database: the ETA from a pool outlook, the bar's text,
the checkpoint's reading of a line cut short by a kill, and results in pandas."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from llm_limits import BatchResult
from llm_limits.batching.checkpoint import Checkpoint, read_history
from llm_limits.batching.eta import combined_eta, quota_eta
from llm_limits.batching.pool import Outlook
from llm_limits.batching.progress import describe, fmt_duration

NOW = datetime(2026, 3, 1, 12, 0, tzinfo=timezone.utc)


def outlook(**changes: object) -> Outlook:
    base: dict[str, object] = {
        "groups": 1, "rpm_limit": 30, "rpm_left": 30, "tpm_limit": 15000, "tpm_left": 15000,
        "rpd_limit": 14400, "rpd_left": 14400, "window_ms": 61000, "cooldown_until": None,
        "next_rpd_reset": NOW + timedelta(hours=20), "waiters": 0, "tokens_per_call": None,
        "read_at": NOW,
    }  # fmt: skip
    return Outlook(**{**base, **changes})  # type: ignore[arg-type]


def test_quota_eta_follows_rpm_tpm_and_the_day() -> None:
    # 30 now, then 30 per 61 s window: 90 more take 3 windows.
    assert quota_eta(120, outlook(), NOW) == pytest.approx(3 * 61)
    # Long pages of 3,000 tokens: TPM admits 5 per window, and 5 right now.
    tpm_bound = quota_eta(20, outlook(tokens_per_call=3000), NOW)
    assert tpm_bound == pytest.approx(3 * 61)
    # 10 calls left today: the rest waits for the reset (20 h), then goes at 30 per window.
    day = quota_eta(70, outlook(rpd_left=10), NOW)
    assert day == pytest.approx(20 * 3600 + 2 * 61)
    # Two days' worth beyond today: a whole day more.
    assert quota_eta(10 + 14400 + 30, outlook(rpd_left=10), NOW) == pytest.approx(
        20 * 3600 + 86400 + 61
    )
    # A cooldown adds its rest; unenforced limits bind nothing; no group: unknown.
    cooling = outlook(cooldown_until=NOW + timedelta(seconds=40), rpm_left=0)
    assert quota_eta(30, cooling, NOW) == pytest.approx(40 + 61)
    free = outlook(rpm_limit=None, rpm_left=None, tpm_limit=None, tpm_left=None,
                   rpd_limit=None, rpd_left=None)  # fmt: skip
    assert quota_eta(1000, free, NOW) == 0.0
    assert quota_eta(10, outlook(groups=0), NOW) is None
    assert quota_eta(0, outlook(), NOW) == 0.0


def test_the_eta_is_the_slower_of_the_quota_and_the_pace_seen() -> None:
    assert combined_eta(100, 50.0, 1.0) == 100.0  # others share the pool: the pace binds
    assert combined_eta(100, 500.0, 10.0) == 500.0
    assert combined_eta(100, None, 4.0) == 25.0
    assert combined_eta(100, None, None) is None
    assert combined_eta(0, None, None) == 0.0


def test_the_bar_says_eta_and_what_is_left_of_the_pool() -> None:
    assert describe(250.0, outlook(rpm_left=27, rpd_left=14100)) == (
        "ETA 4m10s · pool left 27/30 rpm, 14,100/14,400 rpd"
    )
    assert describe(None, None) == "ETA ?"
    assert [fmt_duration(s) for s in (5, 125, 7300, 3 * 86400 + 3600)] == [
        "5s", "2m05s", "2h01m", "3d01h",
    ]  # fmt: skip


def test_a_line_cut_short_by_a_kill_is_skipped_and_the_next_append_starts_a_new_line(
    tmp_path: Path,
) -> None:
    path = tmp_path / "cut.jsonl"
    done = Checkpoint(path)
    done.started('"a"', "a", "batch-1")
    done.result('"a"', "digest-a", BatchResult(0, "a", "ok", text="answer", request_id="batch-1"))
    done.started('"b"', "b", "batch-2")
    done.close()
    with path.open("a") as out:
        out.write('{"event": "result", "key": "\\"b\\"", "sta')  # the kill
    again = Checkpoint(path)
    again.started('"c"', "c", "batch-3")
    again.close()
    history = read_history(path)
    assert history['"a"'].result is not None and history['"a"'].result["text"] == "answer"
    assert history['"a"'].pending == []
    assert history['"b"'].result is None and history['"b"'].pending == ["batch-2"]
    assert history['"c"'].pending == ["batch-3"]


def test_results_and_the_checkpoint_load_into_pandas_as_they_are(tmp_path: Path) -> None:
    pd = pytest.importorskip("pandas")
    results = [
        BatchResult(0, "a", "ok", text="x", prompt_tokens=3, completion_tokens=1),
        BatchResult(1, 7, "invalid", error="empty prompt"),
    ]
    frame = pd.DataFrame(results)
    assert list(frame["status"]) == ["ok", "invalid"]
    assert frame.loc[0, "prompt_tokens"] == 3
    path = tmp_path / "c.jsonl"
    checkpoint = Checkpoint(path)
    checkpoint.started('"a"', "a", "batch-1")
    checkpoint.result('"a"', "d", results[0])
    checkpoint.close()
    lines = pd.read_json(path, lines=True)
    assert list(lines["event"]) == ["started", "result"]
    assert lines.loc[1, "text"] == "x"

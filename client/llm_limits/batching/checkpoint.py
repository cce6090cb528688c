"""The checkpoint: a JSONL file, one flat JSON object per line, appended and flushed as the
batch goes, so a restarted kernel knows what is done.

Two kinds of line, told apart by ``event``:

* ``started``: written before an item's call, with the call's ``request_id``. A started call
  with no result line later is one the process died in; on resume the runner asks the ledger
  (``public.request_outcomes``) whether Google may have answered it.
* ``result``: an item's outcome, the fields of ``BatchResult`` plus the prompt's ``digest``
  (an answer is reused only for the same prompt).

``pandas.read_json(path, lines=True)`` loads the file as it is. Each line goes out in one
``write`` under a lock and is flushed to the operating system, which keeps it through a killed
process (not through a machine crash: no fsync per line). A line cut short by a kill is skipped
on reading, and the next append starts on a new line.
"""

from __future__ import annotations

import json
import logging
import threading
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import IO, Any

from .result import BatchResult

log = logging.getLogger("llm_limits")


@dataclass
class History:
    """What the checkpoint says about one item key."""

    result: dict[str, Any] | None = None  # the last result line
    pending: list[str] = field(default_factory=list)  # calls started after it, never finished


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds")


def read_history(path: Path) -> dict[str, History]:
    """Per item key: its last result and the calls started after it that never finished."""
    out: dict[str, History] = {}
    if not path.exists():
        return out
    with path.open(encoding="utf-8") as lines:
        for number, line in enumerate(lines, 1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
                key = str(record["key"])
                event = record["event"]
            except (ValueError, KeyError, TypeError):
                log.warning("checkpoint %s: line %d is not a record; skipped", path, number)
                continue
            history = out.setdefault(key, History())
            if event == "started":
                history.pending.append(str(record.get("request_id")))
            elif event == "result":
                # A result accounts for every call started before it (lost_calls counts those
                # whose answers died with an earlier process).
                history.result, history.pending = record, []
    return out


class Checkpoint:
    """Appends started and result lines to one file (thread-safe)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock = threading.Lock()
        self._file: IO[str] | None = None

    def _open(self) -> IO[str]:
        if self._file is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            ends_cleanly = True
            if self.path.exists() and self.path.stat().st_size > 0:
                with self.path.open("rb") as existing:
                    existing.seek(-1, 2)
                    ends_cleanly = existing.read(1) == b"\n"
            self._file = self.path.open("a", encoding="utf-8")
            if not ends_cleanly:  # the last line was cut short by a kill
                self._file.write("\n")
        return self._file

    def _append(self, record: dict[str, Any]) -> None:
        line = json.dumps(record, ensure_ascii=False, default=str) + "\n"
        with self._lock:
            out = self._open()
            out.write(line)
            out.flush()

    def started(self, key: str, item_id: str | int, request_id: str) -> None:
        self._append(
            {"event": "started", "key": key, "id": item_id, "request_id": request_id, "at": _now()}
        )

    def result(self, key: str, digest: str, result: BatchResult) -> None:
        record = {"event": "result", "key": key, "digest": digest, "at": _now(), **asdict(result)}
        record.pop("resumed")
        self._append(record)

    def close(self) -> None:
        with self._lock:
            if self._file is not None:
                self._file.close()
                self._file = None

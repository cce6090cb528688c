"""What a batch returns for each item: one flat record, so ``pandas.DataFrame(results)`` reads it
as it is (a list of dataclasses becomes one column per field)."""

from __future__ import annotations

from dataclasses import dataclass

# ok       the answer is in `text`
# failed   the call raised (`error` says what); the next run calls it again (retry_failed)
# invalid  bad input, never sent: an empty prompt, a prompt that is not a str, a duplicate id
# lost     Google may have answered a call the process died in, and its answer is gone; with
#          redo_lost=False the item is not called again (`lost_calls` counts such calls)
# not_run  the run stopped before the item (the day's quota is spent, no key, an interrupt);
#          not checkpointed, so the next run does it
STATUSES = ("ok", "failed", "invalid", "lost", "not_run")


@dataclass
class BatchResult:
    """One item's outcome, in input order (``index``)."""

    index: int
    id: str | int
    status: str
    text: str | None = None
    error: str | None = None
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    finish_reason: str | None = None
    request_id: str | None = None  # the ledger's request_id of the call that produced it
    lost_calls: int = 0  # earlier calls that Google may have answered, answers lost at a kill
    resumed: bool = False  # read from the checkpoint, not called in this run
    seconds: float | None = None  # wall time of this run's call, waits for quota included

    @property
    def ok(self) -> bool:
        return self.status == "ok"

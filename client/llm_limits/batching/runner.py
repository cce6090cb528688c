"""``llm_limits.batch`` / ``abatch``: many prompts through the quota pool, concurrently, at the
pool's pace; results in input order; resumable from a checkpoint.

How a run goes:

1. The items are read (``items``): bad ones become ``invalid`` results in their place.
2. The checkpoint, if any, is read (``checkpoint``): an item whose last result is ``ok`` for the
   same prompt is not called again. Calls that were started but never finished (the process
   died in them) are looked up in the ledger by their request id (``public.request_outcomes``).
3. The rest are called by ``concurrency`` workers (threads for ``batch``, tasks for
   ``abatch``), each call a WAIT at the pool's pace, holding one place in line however long it
   waits (``targets``); a failed item is recorded and the run goes on; the day's quota or the
   caller's daily budget running out stops the run (the remaining items are ``not_run``).
4. The bar (tqdm) shows the ETA from the pool's quota (``public.batch_outlook``, read every few
   seconds, not per item) and the rate seen.

Exactly once. Google has no idempotency key, so no client can promise that a call the process
was killed in reached Google zero times: the kill can land after Google answered and before the
answer reached the checkpoint. So each call is written to the checkpoint as ``started``, with
its request id, before it goes out, and the answer afterwards. On resume, a started call
without an answer is looked up in the ledger, where ``acquire`` recorded that request id:

* no grant, a 429, or a release before sending: Google never answered it; the item simply
  runs. Items the process was waiting on quota for (most of them, at a kill) are such.
* committed, still open, expired, or released after sending: Google may have answered it.
  ``redo_lost=True`` (the default) calls the item again and counts the earlier call in
  ``lost_calls``, so every item ends with an answer and the extra spend is visible;
  ``redo_lost=False`` records the item as ``lost`` and calls nothing, so Google serves every
  item at most once. Either way no answer that reached the checkpoint is ever paid for twice,
  and at most ``concurrency`` calls are in question per kill.

Without a database URL (the gateway route on Kaggle) the ledger cannot be asked, and every
call in flight at the kill counts as maybe answered.
"""

from __future__ import annotations

import asyncio
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .. import ops
from ..client import Client
from ..db import url_from_env
from .checkpoint import Checkpoint, History, read_history
from .items import Item, Rejected, read_items
from .pool import PoolReader
from .progress import Progress, ProgressView
from .result import BatchResult
from .targets import Answer, Busy, DirectTarget, GatewayTarget, Stop, Target

OUTLOOK_EVERY_S = 5.0
TICK_S = 0.25


@dataclass(frozen=True)
class _Ask:
    """One item's call of its target: a plan step that ``ops`` runs blocking or on asyncio."""

    target: Target
    prompt: str
    request_id: str

    def run(self) -> Answer:
        return self.target.call(self.prompt, self.request_id)

    async def arun(self) -> Answer:
        return await self.target.acall(self.prompt, self.request_id)


def _describe(err: BaseException) -> str:
    code = getattr(err, "code", None)
    message = getattr(err, "message", None) or str(err)
    head = type(err).__name__ + (f" {code}" if code else "")
    return f"{head}: {' '.join(message.split())}"[:1000]


def _resumed(item: Item, record: dict[str, Any]) -> BatchResult:
    fields = {k: record.get(k) for k in ("text", "error", "prompt_tokens", "completion_tokens",
                                           "finish_reason", "request_id", "seconds")}  # fmt: skip
    return BatchResult(
        index=item.index,
        id=item.id,
        status=str(record["status"]),
        lost_calls=int(record.get("lost_calls") or 0),
        resumed=True,
        **fields,
    )


class _Run:
    """One batch run's state, shared by its workers (blocking or async)."""

    def __init__(
        self,
        items: Iterable[object],
        *,
        target: Target,
        reader: PoolReader,
        model: str,
        caller: str | None,
        checkpoint: str | Path | None,
        redo_lost: bool,
        retry_failed: bool,
    ) -> None:
        self.target, self.reader, self.model, self.caller = target, reader, model, caller
        self.redo_lost, self.retry_failed = redo_lost, retry_failed
        self.entries = read_items(items)
        self.results: list[BatchResult | None] = [None] * len(self.entries)
        self.checkpoint = Checkpoint(Path(checkpoint)) if checkpoint is not None else None
        self.todo: deque[tuple[Item, int]] = deque()
        self.stop_reason: str | None = None
        self.interrupted = False
        self._lock = threading.Lock()
        self.progress: ProgressView | None = None

    # -- before the calls: what the input and the checkpoint already settle ------------------

    def plan(self) -> list[BatchResult]:
        """Settle what needs no call; queue the rest. Returns the settled results."""
        history = read_history(self.checkpoint.path) if self.checkpoint else {}
        pending = {
            rid
            for entry in self.entries
            if isinstance(entry, Item) and entry.key in history
            for rid in history[entry.key].pending
        }
        answered = self.reader.maybe_answered(pending)
        if answered is None:  # the ledger cannot say: assume the worst
            answered = pending
        settled: list[BatchResult] = []
        for entry in self.entries:
            result: BatchResult | None
            if isinstance(entry, Rejected):
                result = BatchResult(entry.index, entry.id, "invalid", error=entry.error)
            else:
                result = self._settle(entry, history.get(entry.key, History()), answered)
            if result is not None:
                self.results[entry.index] = result
                settled.append(result)
        return settled

    def _settle(self, item: Item, history: History, answered: set[str]) -> BatchResult | None:
        last = history.result
        same_prompt = last is not None and last.get("digest") == item.digest
        if last is not None and same_prompt:
            status = last.get("status")
            keep = (
                status == "ok"
                or (status == "failed" and not self.retry_failed)
                or (status == "lost" and not self.redo_lost)
            )
            if keep:
                return _resumed(item, last)
        prior = int(last.get("lost_calls") or 0) if last is not None and same_prompt else 0
        newly_lost = sum(rid in answered for rid in history.pending)
        if newly_lost and not self.redo_lost:
            result = BatchResult(
                item.index,
                item.id,
                "lost",
                error="Google may have answered this item's call before the process died; the "
                "answer is lost (run with redo_lost=True to call it again)",
                lost_calls=prior + newly_lost,
            )
            if self.checkpoint is not None:
                self.checkpoint.result(item.key, item.digest, result)
            return result
        self.todo.append((item, prior + newly_lost))
        return None

    # -- one item -------------------------------------------------------------------------------

    def item_plan(self, item: Item, lost_calls: int) -> ops.Plan[BatchResult]:
        request_id = f"batch-{uuid.uuid4().hex}"
        started: float | None = None
        while True:
            if self.stop_reason is not None or self.interrupted:
                return self._not_run(item, lost_calls)
            if started is None:  # written before the call goes out: see the module docstring
                if self.checkpoint is not None:
                    self.checkpoint.started(item.key, item.id, request_id)
                started = time.monotonic()
            try:
                answer: Answer = yield _Ask(self.target, item.prompt, request_id)
            except Busy as busy:
                yield ops.Sleep(max(0.0, busy.retry_after))
                continue
            except Stop as stop:
                self.stop(str(stop))
                return self._not_run(item, lost_calls)
            except Exception as err:
                result = BatchResult(
                    item.index, item.id, "failed", error=_describe(err), request_id=request_id,
                    lost_calls=lost_calls,
                )  # fmt: skip
                break
            result = BatchResult(
                item.index,
                item.id,
                "ok",
                text=answer.text,
                prompt_tokens=answer.prompt_tokens,
                completion_tokens=answer.completion_tokens,
                finish_reason=answer.finish_reason,
                request_id=request_id,
                lost_calls=lost_calls,
            )
            break
        assert started is not None
        result.seconds = round(time.monotonic() - started, 3)
        if self.checkpoint is not None:
            self.checkpoint.result(item.key, item.digest, result)
        return result

    def _not_run(self, item: Item, lost_calls: int) -> BatchResult:
        why = "interrupted" if self.interrupted else f"the run stopped: {self.stop_reason}"
        return BatchResult(item.index, item.id, "not_run", error=why, lost_calls=lost_calls)

    def stop(self, reason: str) -> None:
        with self._lock:
            if self.stop_reason is None:
                self.stop_reason = reason

    def next_item(self) -> tuple[Item, int] | None:
        with self._lock:
            if self.stop_reason is not None or self.interrupted or not self.todo:
                return None
            return self.todo.popleft()

    def record(self, result: BatchResult) -> None:
        self.results[result.index] = result
        if self.progress is not None and result.status != "not_run":
            self.progress.count(result)

    def read_outlook(self) -> None:
        assert self.progress is not None
        aliases = self.target.key_aliases() if self.reader.url is not None else None
        self.progress.set_outlook(self.reader.outlook(self.model, aliases, self.caller))

    def finish(self) -> list[BatchResult]:
        """Every item's result, in input order (items never reached are ``not_run``)."""
        out: list[BatchResult] = []
        for i, result in enumerate(self.results):
            if result is None:
                entry = self.entries[i]
                assert isinstance(entry, Item)
                result = self._not_run(entry, 0)
            out.append(result)
        return out

    def close(self) -> None:
        if self.progress is not None:
            self.progress.close()
        if self.checkpoint is not None:
            self.checkpoint.close()


def _target(
    client: Client | None,
    gateway: str | None,
    token: str | None,
    model: str,
    caller: str | None,
    config: Any,
    wait_slice: float,
    timeout: float,
) -> tuple[Target, Client | None]:
    """The target, and the client the batch made itself (to close), if any."""
    if gateway is not None:
        if client is not None:
            raise ValueError("give client= or gateway=, not both")
        if not token:
            raise ValueError(
                "gateway= needs token= (the caller token `llm-limits callers add` printed)"
            )
        return GatewayTarget(gateway, token, model, config, wait_slice, timeout), None
    own = None
    if client is None:
        client = own = Client.from_env(caller=caller, timeout=timeout)
    return DirectTarget(client, model, caller, config, wait_slice), own


def _start(
    items: Iterable[object],
    *,
    model: str,
    caller: str | None,
    client: Client | None,
    gateway: str | None,
    token: str | None,
    db_url: str | None,
    checkpoint: str | Path | None,
    config: Any,
    progress: bool,
    on_progress: Callable[[Progress], object] | None,
    redo_lost: bool,
    retry_failed: bool,
    wait_slice: float,
    timeout: float,
) -> tuple[_Run, Client | None]:
    target, own = _target(client, gateway, token, model, caller, config, wait_slice, timeout)
    run = _Run(
        items,
        target=target,
        reader=PoolReader(db_url or url_from_env()),
        model=model,
        caller=caller,
        checkpoint=checkpoint,
        redo_lost=redo_lost,
        retry_failed=retry_failed,
    )
    settled = run.plan()
    run.progress = ProgressView(
        len(run.entries),
        settled,
        show=progress,
        desc=f"{model} ",
        on_progress=on_progress,
        refresh_s=OUTLOOK_EVERY_S,
    )
    return run, own


def batch(
    items: Iterable[object],
    *,
    model: str,
    caller: str | None = None,
    client: Client | None = None,
    gateway: str | None = None,
    token: str | None = None,
    db_url: str | None = None,
    checkpoint: str | Path | None = None,
    concurrency: int = 8,
    config: Any = None,
    progress: bool = True,
    on_progress: Callable[[Progress], object] | None = None,
    redo_lost: bool = True,
    retry_failed: bool = True,
    wait_slice: float = 60.0,
    timeout: float = 120.0,
) -> list[BatchResult]:
    """Run ``items`` through ``model`` at the pool's pace; one ``BatchResult`` per item, in order.

    ``items``: prompts (``str``), dicts with ``prompt`` (and ``id``), or ``(id, prompt)`` pairs
    (see ``llm_limits.batching.items``). The calls go through ``client`` (an
    ``llm_limits.Client``; default ``Client.from_env(caller=caller)``), or through the
    llm-gateway at ``gateway`` (its URL) with the caller ``token``. ``checkpoint``: a JSONL path
    that makes the run resumable. ``db_url``: the quota database, for the ETA and the resume
    (default: the client's environment variables; none is fine). ``wait_slice``: the most
    seconds an item sleeps in line at once: a limit that frees later than that (the day's
    quota, a long cooldown) is not waited for (over the gateway: the most seconds one request
    waits); ``timeout``: seconds for Google's part of a call. A failed item is recorded, never
    raised; a ``KeyboardInterrupt`` stops starting items, and the calls already out (waiting in
    line included) still finish into the checkpoint.
    """
    run, own = _start(
        items, model=model, caller=caller, client=client, gateway=gateway, token=token,
        db_url=db_url, checkpoint=checkpoint, config=config, progress=progress,
        on_progress=on_progress, redo_lost=redo_lost, retry_failed=retry_failed,
        wait_slice=wait_slice, timeout=timeout,
    )  # fmt: skip

    def worker() -> None:
        while (job := run.next_item()) is not None:
            run.record(ops.run(run.item_plan(*job)))

    threads = [
        threading.Thread(target=worker, name=f"llm-limits-batch-{i}", daemon=True)
        for i in range(max(1, min(concurrency, len(run.todo))))
    ]
    try:
        if run.todo:
            run.read_outlook()
        for thread in threads:
            thread.start()
        for thread in threads:
            while thread.is_alive():
                thread.join(TICK_S)
                if run.progress is not None and run.progress.outlook_due():
                    run.read_outlook()
    except KeyboardInterrupt:
        run.interrupted = True  # the calls out finish in their threads, into the checkpoint
        raise
    finally:
        if not run.interrupted:
            run.close()
            run.target.close()
            if own is not None:
                own.close()
    return run.finish()


async def abatch(
    items: Iterable[object],
    *,
    model: str,
    caller: str | None = None,
    client: Client | None = None,
    gateway: str | None = None,
    token: str | None = None,
    db_url: str | None = None,
    checkpoint: str | Path | None = None,
    concurrency: int = 8,
    config: Any = None,
    progress: bool = True,
    on_progress: Callable[[Progress], object] | None = None,
    redo_lost: bool = True,
    retry_failed: bool = True,
    wait_slice: float = 60.0,
    timeout: float = 120.0,
) -> list[BatchResult]:
    """``batch`` on asyncio: ``concurrency`` tasks calling ``agenerate`` (or the SDK's ``aio``).

    Cancelling it cancels the calls out (the client settles their grants); their items are
    retried by the next run, as after a kill.
    """
    run, own = await asyncio.to_thread(
        lambda: _start(
            items, model=model, caller=caller, client=client, gateway=gateway, token=token,
            db_url=db_url, checkpoint=checkpoint, config=config, progress=progress,
            on_progress=on_progress, redo_lost=redo_lost, retry_failed=retry_failed,
            wait_slice=wait_slice, timeout=timeout,
        )
    )  # fmt: skip

    async def worker() -> None:
        while (job := run.next_item()) is not None:
            run.record(await ops.arun(run.item_plan(*job)))

    async def outlook_ticker() -> None:
        while True:
            if run.progress is not None and run.progress.outlook_due():
                await asyncio.to_thread(run.read_outlook)
            await asyncio.sleep(TICK_S)

    workers = [
        asyncio.ensure_future(worker()) for _ in range(max(1, min(concurrency, len(run.todo))))
    ]
    ticker = asyncio.ensure_future(outlook_ticker()) if run.todo else None
    try:
        await asyncio.gather(*workers)
    except BaseException:
        run.interrupted = True
        for task in workers:
            task.cancel()
        await asyncio.gather(*workers, return_exceptions=True)
        raise
    finally:
        if ticker is not None:
            ticker.cancel()
            await asyncio.gather(ticker, return_exceptions=True)
        run.close()
        await run.target.aclose()
        if own is not None:
            await own.aclose()
    return run.finish()

"""Notebook batch runs: many prompts through the quota pool, with progress and resume.

``batch`` (blocking, threads) and ``abatch`` (asyncio) run prompts concurrently at the pool's
pace and return one ``BatchResult`` per item, in input order; ``pandas.DataFrame(results)``
reads them as they are. One idea per module: ``items`` (input and ids), ``checkpoint`` (the
JSONL file), ``pool`` (what the batch reads from the database), ``eta`` (the ETA),
``progress`` (the tqdm bar), ``targets`` (the direct client or the gateway), ``runner`` (the
run, and how "exactly once" is kept across a kill).
"""

from .progress import Progress
from .result import BatchResult
from .runner import abatch, batch

__all__ = ["BatchResult", "Progress", "abatch", "batch"]

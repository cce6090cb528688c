-- One acquire + commit_usage pair on a single hot quota group, as a design
-- before settle made it: bench/storage.py's before/after view runs it on the
-- design before 2026-11-29 (commit_usage is gone since 20261206003000; the
-- pair now is acquire_settle_hot.sql). The model is passed with
-- -D model=bench-free. A refusal ends the pair early.
select granted::int as ok, reservation_id as rid
from public.acquire(model => ':model', tokens => 100, key_aliases => array['bench-1']) \gset
\if :ok
select public.commit_usage(':rid'::uuid, 90, 10);
\endif

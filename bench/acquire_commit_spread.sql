-- One acquire + commit_usage pair (two transactions), as a design before
-- settle made it, on one of 16 quota groups picked at random; the limits do
-- not bind. bench/storage.py's before/after view runs it on the design before
-- 2026-11-29 (commit_usage is gone since 20261206003000; the pair now is
-- acquire_settle_spread.sql).
\set g random(1, 16)
select granted::int as ok, reservation_id as rid
from public.acquire(model => 'bench-free', tokens => 100, key_aliases => array['bench-' || :g]) \gset
\if :ok
select public.commit_usage(':rid'::uuid, 90, 10);
\endif

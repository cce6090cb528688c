-- One acquire + commit_usage pair, as the client makes them (two transactions),
-- on one of 16 quota groups picked at random; the limits do not bind.
\set g random(1, 16)
select granted::int as ok, reservation_id as rid
from public.acquire(model => 'bench-free', tokens => 100, key_aliases => array['bench-' || :g]) \gset
\if :ok
select public.commit_usage(':rid'::uuid, 90, 10);
\endif

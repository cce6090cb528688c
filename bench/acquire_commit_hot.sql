-- One acquire + commit_usage pair on a single hot quota group.
select granted::int as ok, reservation_id as rid
from public.acquire(model => 'bench-model', tokens => 100, key_aliases => array['bench-1']) \gset
\if :ok
select public.commit_usage(':rid'::uuid, 90, 10);
\endif

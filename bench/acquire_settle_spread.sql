-- One acquire + settle pair, as the carriers (client, gateway) make them since
-- the protocol moved into the database: two transactions, settle handed a
-- 200 with its usageMetadata; on one of 16 quota groups picked at random.
\set g random(1, 16)
select granted::int as ok, reservation_id as rid
from public.acquire(model => 'bench-free', tokens => 100, key_aliases => array['bench-' || :g]) \gset
\if :ok
select action from public.settle(':rid'::uuid, 200,
    '{"usageMetadata": {"promptTokenCount": 90, "candidatesTokenCount": 10}}');
\endif

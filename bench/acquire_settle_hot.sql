-- One acquire + settle pair on a single hot quota group (the carriers' pair;
-- see acquire_settle_spread.sql). The model is passed with -D model=...:
-- bench-free (limit does not bind) or bench-30k (30,000 RPM, the highest
-- Gemini tier). A refusal ends the pair early.
select granted::int as ok, reservation_id as rid
from public.acquire(model => ':model', tokens => 100, key_aliases => array['bench-1']) \gset
\if :ok
select action from public.settle(':rid'::uuid, 200,
    '{"usageMetadata": {"promptTokenCount": 90, "candidatesTokenCount": 10}}');
\endif

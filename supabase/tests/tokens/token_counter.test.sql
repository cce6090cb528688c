-- The input-token counter is a column of the model's row, read through
-- token_counter(); quota_status() compares each committed call's estimate
-- with its actual count over the live window.
begin;
select plan(12);

insert into public.google_ai_model_limits (model, api_model, rpm, tpm, rpd, token_counter)
values ('test-model', 'test-model-api', 10, 100000, 100, 'count_tokens');
insert into public.google_ai_api_keys (key_alias, env_var_name, quota_group)
values ('k1', 'TEST_KEY_1', 'proj-1');

select results_eq(
    $$select * from public.token_counter(model => 'test-model')$$,
    $$values ('test-model-api'::text, 'count_tokens'::text)$$,
    'token_counter gives the API model id and the configured counter'
);
select results_eq(
    $$select * from public.token_counter(model => 'test-model-api')$$,
    $$values ('test-model-api'::text, 'count_tokens'::text)$$,
    'the API model id resolves too'
);
select results_eq(
    $$select * from public.token_counter(model => 'gemma-3-27b')$$,
    $$values ('gemma-3-27b-it'::text, null::text)$$,
    'the seeded models choose their counter automatically (null)'
);
select throws_ok(
    $$select * from public.token_counter(model => 'no-such-model')$$,
    'LL001', null, 'an unknown model raises LL001'
);
select throws_ok(
    $$select * from public.token_counter(model => null)$$,
    'LL002', null, 'a null model raises LL002'
);
select throws_ok(
    $$update public.google_ai_model_limits set token_counter = 'words' where model = 'test-model'$$,
    '23514', null, 'only gemma3, count_tokens and bytes are counters'
);
select lives_ok(
    $$update public.google_ai_model_limits set token_counter = null where model = 'test-model'$$,
    'null chooses automatically'
);

select is(
    (select q.estimates_compared from public.quota_status() as q where q.model = 'test-model'),
    0, 'no committed call yet: nothing compared'
);
select is(
    (select q.estimate_ratio_p50 from public.quota_status() as q where q.model = 'test-model'),
    null, 'and no ratio'
);

-- Estimates of 1100, 1000 and 3000 against actual counts of 1000: ratios 1.1, 1.0 and 3.0.
create temp table grants as
select a.reservation_id, v.actual
from (values (1100, 1000), (1000, 1000), (3000, 1000)) as v (estimate, actual)
cross join lateral public.acquire('test-model', v.estimate) as a;
select public.settle(g.reservation_id, 200, jsonb_build_object('usageMetadata', jsonb_build_object(
    'promptTokenCount', g.actual, 'candidatesTokenCount', 10
)))
from grants as g;
-- A released call has no actual count to compare.
select public.settle(a.reservation_id, null, null, 'not_sent')
from public.acquire('test-model', 5000) as a;

select results_eq(
    $$select q.estimates_compared, q.estimate_ratio_p50, q.estimate_ratio_max
      from public.quota_status() as q where q.model = 'test-model'$$,
    $$values (3, 1.100::numeric, 3.000::numeric)$$,
    'three committed calls compared: p50 1.1, max 3.0'
);
select ok(
    pg_catalog.has_function_privilege('service_role', 'public.token_counter(text)', 'execute'),
    'service_role can execute token_counter'
);
select ok(
    not pg_catalog.has_function_privilege('anon', 'public.token_counter(text)', 'execute'),
    'anon cannot execute token_counter'
);

select * from finish();
rollback;

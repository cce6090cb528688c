-- With no usable key, acquire refuses with reason no_key (never an error):
-- no active key, an empty key_aliases, aliases that are not in the pool.
begin;
-- Steering llm_limits.now/clock_skew needs the owner-only switch (rolled back with the test).
update google_ai_internal.clock_switch set steerable = true;
select plan(11);

set local "llm_limits.now" = '2026-03-01 12:00:00+00';
insert into public.google_ai_model_limits (model, api_model, rpm, tpm, rpd)
values ('test-model', 'test-model-api', 10, 1000, 100);
insert into public.google_ai_api_keys (key_alias, env_var_name, quota_group, is_active) values
('k-active', 'TEST_KEY_1', 'proj-1', true),
('k-off', 'TEST_KEY_2', 'proj-2', false);

create temp table r_empty as select * from public.acquire('test-model', 10, 'NO_WAIT', 0, array[]::text []);
select is((select r.granted from r_empty as r), false, 'empty key_aliases: refused');
select is((select r.reason from r_empty as r), 'no_key', 'empty key_aliases: reason no_key');
select is((select r.retry_after_ms from r_empty as r), null, 'no_key: no retry time to promise');

select is(
    (select a.reason from public.acquire('test-model', 10, 'NO_WAIT', 0, array['nope', 'nada']) as a),
    'no_key', 'aliases not in the pool: no_key'
);
select is(
    (select a.reason from public.acquire('test-model', 10, 'NO_WAIT', 0, array['k-off']) as a),
    'no_key', 'aliases naming only an inactive key: no_key'
);
select is(
    (select a.key_alias from public.acquire('test-model', 10, 'NO_WAIT', 0, array['nope', 'k-active']) as a),
    'k-active', 'unknown aliases next to a known one are ignored'
);

update public.google_ai_api_keys set is_active = false;
create temp table r_none as select * from public.acquire('test-model', 10);
select is((select r.granted from r_none as r), false, 'no active key at all: refused');
select is((select r.reason from r_none as r), 'no_key', 'no active key at all: reason no_key');
select is(
    (select a.reason from public.acquire('test-model', 10, 'WAIT', 5000) as a), 'no_key',
    'WAIT does not wait for a key to appear'
);

select is(
    (select count(*)::int from public.google_ai_reservations where model = 'test-model'), 1,
    'only the one grant left a reservation'
);
select is(
    (select sum(coalesce((details ->> 'count')::int, 1))::int from public.google_ai_audit_log
     where model = 'test-model' and event = 'refused' and details ->> 'reason' = 'no_key'),
    5, 'each no_key refusal is audited (folded rows count theirs)'
);

select * from finish();
rollback;

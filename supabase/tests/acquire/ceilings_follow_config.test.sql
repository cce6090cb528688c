-- The ceilings acquire checks before it looks at any window: the largest
-- request comes from the TPM of the groups the request could use (LL003);
-- max_wait_ms has a fixed range (a day) and no configured cap: no call
-- lasts longer than one slice, whatever the wait.
-- Each parameter's bad and borderline values, and the check that a refused
-- call changes no table, are in the pytest matrix tests/bad_input.
begin;
-- Steering llm_limits.now/clock_skew needs the owner-only switch (rolled back with the test).
update google_ai_internal.clock_switch set steerable = true;
select plan(7);

set local "llm_limits.now" = '2026-03-01 12:00:00+00';
insert into public.google_ai_model_limits (model, api_model, rpm, tpm, rpd)
values ('test-model', 'test-model-api', 10, 1000, 100);
insert into public.google_ai_api_keys (key_alias, env_var_name, quota_group)
values ('k1', 'TEST_KEY_1', 'proj-1');

select is(
    (select a.granted from public.acquire('test-model', 0, 'WAIT', 86400000) as a), true,
    'a wait of a day is valid'
);
select throws_ok(
    $$select public.acquire('test-model', 10, 'WAIT', 86400001)$$, 'LL007', null,
    'a longer one is bad input'
);

-- A group override that raises TPM makes a large request fit.
insert into public.google_ai_api_keys (key_alias, env_var_name, quota_group)
values ('kpaid', 'TEST_KEY_PAID', 'paid-proj');
insert into public.google_ai_group_limits (quota_group, model, tpm)
values ('paid-proj', 'test-model', 5000);
create temp table big as select * from public.acquire('test-model', 3000);
select is((select b.granted from big as b), true, 'a request above the model TPM fits a paid group');
select is((select b.key_alias from big as b), 'kpaid', 'and is granted on the paid group''s key');
select throws_ok(
    $$select public.acquire('test-model', 3000, 'NO_WAIT', 0, array['k1'])$$, 'LL003', null,
    'restricted to the free key, the same request raises LL003'
);
select throws_ok(
    $$select public.acquire('test-model', 5001)$$, 'LL003', null,
    'above the largest override it raises LL003'
);
select is(
    (select count(*)::int from public.google_ai_reservations where model = 'test-model'),
    2, 'only the two granted requests left reservations'
);

select * from finish();
rollback;

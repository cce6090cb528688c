-- Google counts quota per Cloud project: keys of one quota_group share one
-- budget, and a key with no group is a group of its own.
begin;
-- Steering llm_limits.now/clock_skew needs the owner-only switch (rolled back with the test).
update google_ai_internal.clock_switch set steerable = true;
select plan(11);

set local "llm_limits.now" = '2026-03-01 12:00:00+00';
insert into public.google_ai_model_limits (model, api_model, rpm, tpm, rpd)
values ('test-model', 'test-model', 2, 1000, 100);
insert into public.google_ai_api_keys (key_alias, env_var_name, quota_group) values
('ka1', 'TEST_KEY_A1', 'proj-a'),
('ka2', 'TEST_KEY_A2', 'proj-a'),
('solo', 'TEST_KEY_SOLO', null);

select is(
    (select a.key_alias from public.acquire('test-model', 10, 'NO_WAIT', 0, array['ka1']) as a), 'ka1',
    'ka1 gets the first request of proj-a'
);
select is(
    (select a.key_alias from public.acquire('test-model', 10, 'NO_WAIT', 0, array['ka2']) as a), 'ka2',
    'ka2 gets the second'
);
select is(
    (select a.reason from public.acquire('test-model', 10, 'NO_WAIT', 0, array['ka1']) as a), 'rpm',
    'ka1 is refused: proj-a''s rpm 2 is spent, by both keys together'
);
select is(
    (select a.reason from public.acquire('test-model', 10, 'NO_WAIT', 0, array['ka2']) as a), 'rpm',
    'ka2 is refused too'
);
select is(
    (select a.reason from public.acquire('test-model', 10, 'NO_WAIT', 0, array['ka1', 'ka2']) as a),
    'rpm', 'and so is a caller holding both'
);
select is(
    (select count(*)::int from public.google_ai_reservations where quota_group = 'proj-a'), 2,
    'proj-a never holds more than its rpm'
);

-- Tokens are shared as well.
set local "llm_limits.now" = '2026-03-01 12:05:00+00';
select is(
    (select a.granted from public.acquire('test-model', 600, 'NO_WAIT', 0, array['ka1']) as a), true,
    '600 tokens on ka1'
);
select is(
    (select a.reason from public.acquire('test-model', 600, 'NO_WAIT', 0, array['ka2']) as a), 'tpm',
    '600 more on ka2 exceed proj-a''s TPM 1000'
);

-- A key with no quota_group is its own group.
create temp table r_solo as select * from public.acquire('test-model', 600, 'NO_WAIT', 0, array['solo']);
select is((select r.key_alias from r_solo as r), 'solo', 'a key with null quota_group has its own budget');
select is(
    (select r.quota_group from public.google_ai_reservations as r
     where r.id = (select s.reservation_id from r_solo as s)),
    'solo', 'its group is its alias'
);
select is(
    (select s.window_requests from public.google_ai_quota_state as s
     where s.quota_group = 'proj-a' and s.model = 'test-model'),
    1, 'proj-a''s window holds just the one 12:05 grant'
);

select * from finish();
rollback;

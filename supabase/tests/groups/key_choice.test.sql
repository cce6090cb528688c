-- Which key acquire picks: the lowest priority value first, ties broken by
-- the most headroom (then alias); only active keys in key_aliases.
begin;
-- Steering llm_limits.now/clock_skew needs the owner-only switch (rolled back with the test).
update google_ai_internal.clock_switch set steerable = true;
select plan(14);

set local "llm_limits.now" = '2026-03-01 12:00:00+00';
insert into public.google_ai_model_limits (model, api_model, rpm, tpm, rpd) values
('m-prio', 'm-prio', 2, null, null),
('m-head', 'm-head', 4, null, null);
insert into public.google_ai_api_keys (key_alias, env_var_name, quota_group, priority) values
('k-first', 'TEST_KEY_1', 'proj-1', 1),
('k-second', 'TEST_KEY_2', 'proj-2', 2),
('k-c', 'TEST_KEY_C', 'proj-c', 5),
('k-d', 'TEST_KEY_D', 'proj-d', 5),
-- Two keys of one group: the lower priority value represents the group.
('k-e-low', 'TEST_KEY_E1', 'proj-e', 9),
('k-e-high', 'TEST_KEY_E2', 'proj-e', 3);

-- Priority: k-first until its group is full, then k-second.
select is(
    (select a.key_alias from public.acquire('m-prio', 0, 'NO_WAIT', 0, array['k-first', 'k-second']) as a),
    'k-first', 'priority 1 before priority 2'
);
select is(
    (select a.key_alias from public.acquire('m-prio', 0, 'NO_WAIT', 0, array['k-first', 'k-second']) as a),
    'k-first', 'priority 1 again, though priority 2 has more headroom'
);
select is(
    (select a.key_alias from public.acquire('m-prio', 0, 'NO_WAIT', 0, array['k-first', 'k-second']) as a),
    'k-second', 'priority 2 once priority 1 is full'
);

-- Equal priority: most headroom first, then alias.
select is(
    (select a.key_alias from public.acquire('m-head', 0, 'NO_WAIT', 0, array['k-c']) as a), 'k-c',
    'setup: one grant on proj-c'
);
select is(
    (select a.key_alias from public.acquire('m-head', 0, 'NO_WAIT', 0, array['k-c', 'k-d']) as a), 'k-d',
    'equal priority: proj-d has more headroom'
);
select is(
    (select a.key_alias from public.acquire('m-head', 0, 'NO_WAIT', 0, array['k-c', 'k-d']) as a), 'k-c',
    'equal priority and equal headroom: alias order'
);
select is(
    (select a.key_alias from public.acquire('m-head', 0, 'NO_WAIT', 0, array['k-c', 'k-d']) as a), 'k-d',
    'then proj-d again, which now has more headroom'
);

-- key_aliases restricts the choice.
select is(
    (select a.key_alias from public.acquire('m-head', 0, 'NO_WAIT', 0, array['k-second']) as a),
    'k-second', 'key_aliases: only the caller''s keys are used, whatever their priority'
);

-- Within one group the key with the lower priority value is used.
select is(
    (select a.key_alias from public.acquire('m-head', 0, 'NO_WAIT', 0, array['k-e-low', 'k-e-high']) as a),
    'k-e-high', 'one key per group: the one with the lower priority value'
);

-- With every key allowed, the best priority wins.
select is(
    (select a.key_alias from public.acquire('m-head', 0) as a), 'k-first',
    'key_aliases null: every active key, best priority first'
);

-- Inactive keys are skipped.
update public.google_ai_api_keys set is_active = false where key_alias = 'k-first';
select is(
    (select a.key_alias from public.acquire('m-head', 0) as a), 'k-second',
    'an inactive key is skipped'
);
select is(
    (select a.key_alias from public.acquire('m-head', 0, 'NO_WAIT', 0, array['k-first', 'k-c']) as a),
    'k-c', 'even when the caller names it'
);
select ok(
    public.disable_key('k-second', 'API_KEY_INVALID'), 'disable_key takes k-second out of the pool'
);
select is(
    (select a.key_alias from public.acquire('m-head', 0) as a), 'k-e-high',
    'a disabled key is skipped: next best priority'
);

select * from finish();
rollback;

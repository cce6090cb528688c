-- Raising window_ms or window_guard_ms never lets the live window over-grant:
-- rows that left the old, shorter window but are inside the new one count
-- again.
begin;
-- Steering llm_limits.now/clock_skew needs the owner-only switch (rolled back with the test).
update google_ai_internal.clock_switch set steerable = true;
select plan(3);

set local "llm_limits.now" = '2026-03-01 12:00:00+00';
insert into public.google_ai_model_limits (model, api_model, rpm, tpm, rpd)
values ('test-model', 'test-model', 2, null, null);
insert into public.google_ai_api_keys (key_alias, env_var_name, quota_group)
values ('k1', 'TEST_KEY_1', 'proj-1');

select is((select a.granted from public.acquire('test-model', 0) as a), true, 'grant A at 12:00:00');
-- At 12:01:02 A has left the 61 s window (and is swept); B is granted.
set local "llm_limits.now" = '2026-03-01 12:01:02+00';
select is((select a.granted from public.acquire('test-model', 0) as a), true, 'grant B at 12:01:02');

-- The operator widens the window to 120 s: A (70 s ago) and B are both in it.
update public.google_ai_settings set window_ms = 120000;
set local "llm_limits.now" = '2026-03-01 12:01:10+00';
select is(
    (select a.granted from public.acquire('test-model', 0) as a), false,
    'with window 120 s + 1 s guard, A and B fill rpm 2: a third request is refused'
);

select * from finish();
rollback;

-- The minute window is exact and sliding, plus a guard (default 60 s + 1 s):
-- a slot frees exactly window_ms + window_guard_ms after its grant, and no
-- fixed-minute boundary ever frees capacity early.
begin;
-- Steering llm_limits.now/clock_skew needs the owner-only switch (rolled back with the test).
update google_ai_internal.clock_switch set steerable = true;
select plan(13);

set local "llm_limits.now" = '2026-03-01 12:00:00+00';
insert into public.google_ai_model_limits (model, api_model, rpm, tpm, rpd) values
('m-edge', 'm-edge', 1, null, null),
('m-minute', 'm-minute', 2, null, null),
('m-guard0', 'm-guard0', 1, null, null),
('m-guard5', 'm-guard5', 1, null, null);
insert into public.google_ai_api_keys (key_alias, env_var_name, quota_group)
values ('k1', 'TEST_KEY_1', 'proj-1');

select is((select a.granted from public.acquire('m-edge', 0) as a), true, 'grant at 12:00:00');
set local "llm_limits.now" = '2026-03-01 12:00:59.9+00';
select is((select a.granted from public.acquire('m-edge', 0) as a), false, 'refused at +59.9 s');
set local "llm_limits.now" = '2026-03-01 12:01:00.5+00';
select is(
    (select a.granted from public.acquire('m-edge', 0) as a), false,
    'refused at +60.5 s: the window has passed but the 1 s guard has not'
);
set local "llm_limits.now" = '2026-03-01 12:01:01+00';
select is((select a.granted from public.acquire('m-edge', 0) as a), true, 'granted at +61 s');

-- Two grants late in a fixed minute: the next fixed minute is no escape.
set local "llm_limits.now" = '2026-03-01 12:01:59.5+00';
select is(
    (select count(*)::int from public.acquire('m-minute', 0) as a where a.granted)
    + (select count(*)::int from public.acquire('m-minute', 0) as a where a.granted),
    2, 'two grants at 12:01:59.5 with rpm 2'
);
set local "llm_limits.now" = '2026-03-01 12:02:00.1+00';
create temp table r_minute as select * from public.acquire('m-minute', 0);
select is(
    (select r.granted from r_minute as r), false,
    'refused at 12:02:00.1: a new fixed minute does not reset the sliding window'
);
select is(
    (select r.retry_after_ms from r_minute as r), 60400, 'retry when the 12:01:59.5 grants leave'
);

-- window_guard_ms = 0: the edge is exactly window_ms.
update public.google_ai_settings set window_guard_ms = 0;
set local "llm_limits.now" = '2026-03-01 12:10:00+00';
select is((select a.granted from public.acquire('m-guard0', 0) as a), true, 'guard 0: grant at 12:10:00');
set local "llm_limits.now" = '2026-03-01 12:10:59.999+00';
select is(
    (select a.retry_after_ms from public.acquire('m-guard0', 0) as a), 1,
    'guard 0: refused 1 ms before +60 s, and told so'
);
set local "llm_limits.now" = '2026-03-01 12:11:00+00';
select is((select a.granted from public.acquire('m-guard0', 0) as a), true, 'guard 0: granted at +60 s');

-- window_guard_ms = 5000: the edge moves to +65 s.
update public.google_ai_settings set window_guard_ms = 5000;
set local "llm_limits.now" = '2026-03-01 12:20:00+00';
select is((select a.granted from public.acquire('m-guard5', 0) as a), true, 'guard 5 s: grant at 12:20:00');
set local "llm_limits.now" = '2026-03-01 12:21:01+00';
select is(
    (select a.retry_after_ms from public.acquire('m-guard5', 0) as a), 4000,
    'guard 5 s: still refused at +61 s, 4 s to go'
);
set local "llm_limits.now" = '2026-03-01 12:21:05+00';
select is((select a.granted from public.acquire('m-guard5', 0) as a), true, 'guard 5 s: granted at +65 s');

select * from finish();
rollback;

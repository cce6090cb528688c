-- WAIT does not sit out a wait that cannot end in a grant: an rpd refusal
-- (or a cooldown) that lasts beyond max_wait_ms returns at once.
begin;
-- Steering llm_limits.now/clock_skew needs the owner-only switch (rolled back with the test).
update google_ai_internal.clock_switch set steerable = true;
select plan(7);

set local "llm_limits.now" = '2026-03-01 12:00:00+00';
insert into public.google_ai_model_limits (model, api_model, rpm, tpm, rpd) values
('m-day', 'm-day', 100, null, 1),
('m-cool', 'm-cool', 100, null, null);
insert into public.google_ai_api_keys (key_alias, env_var_name, quota_group)
values ('k1', 'TEST_KEY_1', 'proj-1');

select is((select a.granted from public.acquire('m-day', 0) as a), true, 'the one request of the day');
create temp table r_day as select * from public.acquire('m-day', 0, 'WAIT', 5000);
select is((select r.reason from r_day as r), 'rpd', 'WAIT on a spent day returns reason rpd');
select cmp_ok((select r.waited_ms from r_day as r), '<', 1000, 'at once, not after max_wait_ms');
select is((select r.retry_after_ms from r_day as r), 72000000, 'with the time of the Pacific midnight');

create temp table r_cool_grant as select * from public.acquire('m-cool', 0);
select is(
    (select s.action from public.settle((select r.reservation_id from r_cool_grant as r), 429,
        '{"error": {"code": 429, "details": [
          {"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": "60s"}]}}') as s),
    'rate_limited', 'setup: a 60 s cooldown'
);
create temp table r_cool as select * from public.acquire('m-cool', 0, 'WAIT', 5000);
select is((select r.reason from r_cool as r), 'cooldown', 'WAIT on a long cooldown returns reason cooldown');
select cmp_ok((select r.waited_ms from r_cool as r), '<', 1000, 'at once');

select * from finish();
rollback;

-- report_rate_limit: the 429'd call stays counted and its (group, model)
-- cools down for retryDelay, the default cooldown, or until the next Pacific
-- midnight for a per-day quota.
begin;
-- Steering llm_limits.now/clock_skew needs the owner-only switch (rolled back with the test).
update google_ai_internal.clock_switch set steerable = true;
select plan(15);

set local "llm_limits.now" = '2026-03-01 12:00:00+00';
insert into public.google_ai_model_limits (model, api_model, rpm, tpm, rpd) values
('m-minute', 'm-minute', 10, null, null),
('m-day', 'm-day', 10, null, null),
('m-default', 'm-default', 10, null, null);
insert into public.google_ai_api_keys (key_alias, env_var_name, quota_group) values
('k1', 'TEST_KEY_1', 'proj-1'),
('k2', 'TEST_KEY_2', 'proj-2');

create temp table r1 as select * from public.acquire('m-minute', 100, 'NO_WAIT', 0, array['k1']);
select is(
    public.report_rate_limit(
        (select r.reservation_id from r1 as r),
        'GenerateRequestsPerMinutePerProjectPerModel-FreeTier', 21000
    ),
    '2026-03-01 12:00:21+00'::timestamptz,
    'returns the cooldown end: now + retry_delay_ms'
);
select results_eq(
    $$select r.status, r.counted_requests::int, r.counted_tokens
      from public.google_ai_reservations as r where r.id = (select x.reservation_id from r1 as x)$$,
    $$values ('rate_limited'::text, 1, 100)$$,
    'the call stays counted'
);
select results_eq(
    $$select s.window_requests, s.window_tokens::int, s.day_requests, s.cooldown_until
      from public.google_ai_quota_state as s where s.quota_group = 'proj-1' and s.model = 'm-minute'$$,
    $$values (1, 100, 1, '2026-03-01 12:00:21+00'::timestamptz)$$,
    'in the window and in the day, and the group cools down'
);

set local "llm_limits.now" = '2026-03-01 12:00:01+00';
create temp table r_cool as select * from public.acquire('m-minute', 10, 'NO_WAIT', 0, array['k1']);
select is((select r.reason from r_cool as r), 'cooldown', 'acquire refuses with reason cooldown');
select is((select r.retry_after_ms from r_cool as r), 20000, 'retry_after_ms is the rest of the retryDelay');
select is(
    (select a.key_alias from public.acquire('m-minute', 10) as a), 'k2',
    'another group is not cooling down and gets the request'
);
select is(
    public.report_rate_limit((select r.reservation_id from r1 as r), null, 5000),
    '2026-03-01 12:00:21+00'::timestamptz,
    'a shorter retryDelay does not shorten the cooldown'
);
select is(
    public.report_rate_limit((select r.reservation_id from r1 as r), null, 30000),
    '2026-03-01 12:00:31+00'::timestamptz,
    'a longer one extends it'
);
select is(
    (select r.status from public.google_ai_reservations as r
     where r.id = (select x.reservation_id from r1 as x)),
    'rate_limited', 'repeating the report is harmless'
);
set local "llm_limits.now" = '2026-03-01 12:00:31+00';
select is(
    (select a.granted from public.acquire('m-minute', 10, 'NO_WAIT', 0, array['k1']) as a), true,
    'granted once the cooldown ends'
);

-- A per-day quota cools down until the next Pacific midnight, whatever
-- retryDelay says.
create temp table r_day as select * from public.acquire('m-day', 10, 'NO_WAIT', 0, array['k1']);
select is(
    public.report_rate_limit(
        (select r.reservation_id from r_day as r),
        'GenerateRequestsPerDayPerProjectPerModel-FreeTier', 5000
    ),
    '2026-03-02 08:00:00+00'::timestamptz,
    'PerDay: cooldown until the next midnight America/Los_Angeles'
);
create temp table r_day_refused as select * from public.acquire('m-day', 10, 'NO_WAIT', 0, array['k1']);
select is((select r.reason from r_day_refused as r), 'cooldown', 'PerDay: acquire refuses with cooldown');
select is(
    (select r.retry_after_ms from r_day_refused as r), 71969000,
    'PerDay: retry at Pacific midnight (19 h 59 min 29 s away)'
);

-- No retryDelay: google_ai_settings.default_cooldown_ms.
update public.google_ai_settings set default_cooldown_ms = 45000;
create temp table r_def as select * from public.acquire('m-default', 10, 'NO_WAIT', 0, array['k1']);
select is(
    public.report_rate_limit((select r.reservation_id from r_def as r)),
    '2026-03-01 12:01:16+00'::timestamptz,
    'retry_delay_ms null: now + default_cooldown_ms'
);
select is(
    (select a.retry_after_ms from public.acquire('m-default', 10, 'NO_WAIT', 0, array['k1']) as a),
    45000, 'and acquire waits that long'
);

select * from finish();
rollback;

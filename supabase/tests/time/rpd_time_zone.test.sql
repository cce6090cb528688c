-- google_ai_settings.rpd_time_zone decides when the quota day turns.
begin;
-- Steering llm_limits.now/clock_skew needs the owner-only switch (rolled back with the test).
update google_ai_internal.clock_switch set steerable = true;
select plan(7);

update public.google_ai_settings set rpd_time_zone = 'UTC';
insert into public.google_ai_model_limits (model, api_model, rpm, tpm, rpd) values
('test-model', 'test-model', 100, null, 1),
('m-cool', 'm-cool', 100, null, null);
insert into public.google_ai_api_keys (key_alias, env_var_name, quota_group)
values ('k1', 'TEST_KEY_1', 'proj-1');

set local "llm_limits.now" = '2026-03-01 12:00:00+00';
select is((select a.granted from public.acquire('test-model', 0) as a), true, 'first request of the UTC day');
create temp table r_refused as select * from public.acquire('test-model', 0);
select is((select r.reason from r_refused as r), 'rpd', 'second request of the day: rpd');
select is(
    (select r.retry_after_ms from r_refused as r), 43200000,
    'retry at the next UTC midnight (12 h), not the Pacific one (20 h)'
);
set local "llm_limits.now" = '2026-03-02 00:00:00+00';
select is(
    (select a.granted from public.acquire('test-model', 0) as a), true,
    'granted at UTC midnight (16:00 in Los Angeles, still Mar 1 there)'
);
select is(
    (select r.rpd_day from public.google_ai_reservations as r
     where r.model = 'test-model' order by r.granted_at desc limit 1),
    '2026-03-02'::date, 'booked on the UTC day'
);

-- A per-day 429 also cools down until midnight of the configured zone.
create temp table r_cool as select * from public.acquire('m-cool', 0);
select public.settle((select r.reservation_id from r_cool as r), 429, '{"error": {"code": 429, "details": [
    {"@type": "type.googleapis.com/google.rpc.QuotaFailure", "violations": [
      {"quotaId": "GenerateRequestsPerDayPerProjectPerModel"}]},
    {"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": "1s"}]}}');
select is(
    (select s.cooldown_until from public.google_ai_quota_state as s
     where s.quota_group = 'proj-1' and s.model = 'm-cool'),
    '2026-03-03 00:00:00+00'::timestamptz,
    'a PerDay cooldown ends at the next UTC midnight'
);

update public.google_ai_settings set rpd_time_zone = 'Asia/Tokyo';
select is(
    (select a.retry_after_ms from public.acquire('test-model', 0) as a), 54000000,
    'with Asia/Tokyo the day ends at 2026-03-02 15:00Z (Tokyo midnight), 15 h away'
);

select * from finish();
rollback;

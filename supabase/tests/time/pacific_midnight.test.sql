-- RPD resets at midnight America/Los_Angeles, on DST days too.
begin;
-- Steering llm_limits.now/clock_skew needs the owner-only switch (rolled back with the test).
update google_ai_internal.clock_switch set steerable = true;
select plan(12);

insert into public.google_ai_model_limits (model, api_model, rpm, tpm, rpd)
values ('test-model', 'test-model', 100, null, 1);
insert into public.google_ai_api_keys (key_alias, env_var_name, quota_group)
values ('k1', 'TEST_KEY_1', 'proj-1');

-- Spring forward: 2026-03-08 02:00 PST becomes 03:00 PDT.
set local "llm_limits.now" = '2026-03-08 07:59:59+00';
create temp table r_mar7 as select * from public.acquire('test-model', 0);
select is((select r.granted from r_mar7 as r), true, '23:59:59 PST on Mar 7: granted');
set local "llm_limits.now" = '2026-03-08 07:59:59.5+00';
select is(
    (select a.retry_after_ms from public.acquire('test-model', 0) as a), 500,
    'half a second later: refused for rpd until Pacific midnight'
);
set local "llm_limits.now" = '2026-03-08 08:00:01+00';
create temp table r_mar8 as select * from public.acquire('test-model', 0);
select is((select r.granted from r_mar8 as r), true, '00:00:01 PST on Mar 8: a new day, granted');
select results_eq(
    $$select r.rpd_day from public.google_ai_reservations as r
      where r.id in ((select x.reservation_id from r_mar7 as x), (select x.reservation_id from r_mar8 as x))
      order by r.granted_at$$,
    $$values ('2026-03-07'::date), ('2026-03-08'::date)$$,
    'the two grants are booked on different Pacific days'
);
set local "llm_limits.now" = '2026-03-08 08:00:02+00';
select is(
    (select a.retry_after_ms from public.acquire('test-model', 0) as a), 82798000,
    'Mar 8 has 23 hours: the next reset is 2026-03-09 07:00Z (22:59:58 away)'
);

select is(
    google_ai_internal.next_day_start('2026-03-08 17:00:00+00', 'America/Los_Angeles'),
    '2026-03-09 07:00:00+00'::timestamptz,
    'next midnight after 2026-03-08 10:00 PDT is 2026-03-09 07:00Z'
);
select is(
    google_ai_internal.next_day_start('2026-03-08 09:00:00+00', 'America/Los_Angeles'),
    '2026-03-09 07:00:00+00'::timestamptz,
    'next midnight after 2026-03-08 01:00 PST is 2026-03-09 07:00Z'
);
select is(
    google_ai_internal.next_day_start('2026-11-01 18:00:00+00', 'America/Los_Angeles'),
    '2026-11-02 08:00:00+00'::timestamptz,
    'next midnight after 2026-11-01 10:00 PST is 2026-11-02 08:00Z'
);
select is(
    google_ai_internal.next_day_start('2026-11-01 08:30:00+00', 'America/Los_Angeles'),
    '2026-11-02 08:00:00+00'::timestamptz,
    'next midnight after the second 01:30 of 2026-11-01 (PST) is 2026-11-02 08:00Z'
);

-- Fall back: 2026-11-01 02:00 PDT becomes 01:00 PST; the day has 25 hours.
set local "llm_limits.now" = '2026-11-01 06:59:59+00';
select is((select a.granted from public.acquire('test-model', 0) as a), true, '23:59:59 PDT on Oct 31: granted');
set local "llm_limits.now" = '2026-11-01 07:00:01+00';
select is((select a.granted from public.acquire('test-model', 0) as a), true, '00:00:01 PDT on Nov 1: granted');
set local "llm_limits.now" = '2026-11-01 07:00:02+00';
select is(
    (select a.retry_after_ms from public.acquire('test-model', 0) as a), 89998000,
    'Nov 1 has 25 hours: the next reset is 2026-11-02 08:00Z (24:59:58 away)'
);

select * from finish();
rollback;

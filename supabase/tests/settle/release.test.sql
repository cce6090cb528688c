-- release: sent = false refunds the request and its tokens (window and day),
-- sent = true keeps them counted. Idempotent, and harmless after a commit.
begin;
-- Steering llm_limits.now/clock_skew needs the owner-only switch (rolled back with the test).
update google_ai_internal.clock_switch set steerable = true;
select plan(17);

set local "llm_limits.now" = '2026-03-01 12:00:00+00';
insert into public.google_ai_model_limits (model, api_model, rpm, tpm, rpd) values
('m-unsent', 'm-unsent', 1, 1000, null),
('m-sent', 'm-sent', 1, 1000, null),
('m-day', 'm-day', null, null, 1),
('m-commit', 'm-commit', 1, 1000, null);
insert into public.google_ai_api_keys (key_alias, env_var_name, quota_group)
values ('k1', 'TEST_KEY_1', 'proj-1');

-- sent = false: refunded.
create temp table r_unsent as select * from public.acquire('m-unsent', 800);
select is(
    (select a.reason from public.acquire('m-unsent', 10) as a), 'rpm', 'm-unsent: the window is full'
);
select is(
    public.release((select r.reservation_id from r_unsent as r), 'never sent', false), true,
    'release(sent => false) returns true'
);
select results_eq(
    $$select r.status, r.counted_requests::int, r.counted_tokens
      from public.google_ai_reservations as r where r.id = (select x.reservation_id from r_unsent as x)$$,
    $$values ('released'::text, 0, 0)$$,
    'the released reservation counts nothing'
);
select is(
    (select a.granted from public.acquire('m-unsent', 1000) as a), true,
    'the refused request is now granted, with the refunded tokens too'
);
select is(
    public.release((select r.reservation_id from r_unsent as r), 'again', false), false,
    'a second release returns false'
);
select is(
    (select s.window_requests from public.google_ai_quota_state as s
     where s.quota_group = 'proj-1' and s.model = 'm-unsent'),
    1, 'and does not refund twice'
);

-- sent = true: kept counted.
create temp table r_sent as select * from public.acquire('m-sent', 800);
select is(
    public.release((select r.reservation_id from r_sent as r), 'timeout', true), true,
    'release(sent => true) returns true'
);
select results_eq(
    $$select r.status, r.counted_requests::int, r.counted_tokens
      from public.google_ai_reservations as r where r.id = (select x.reservation_id from r_sent as x)$$,
    $$values ('released'::text, 1, 800)$$,
    'a call that may have reached Google stays counted'
);
select is(
    (select a.reason from public.acquire('m-sent', 10) as a), 'rpm',
    'the next request is still refused'
);
select is(
    public.release((select r.reservation_id from r_sent as r), 'again', false), false,
    'releasing it again with sent => false does not refund it after all'
);
select is(
    (select a.reason from public.acquire('m-sent', 10) as a), 'rpm', 'still refused'
);

-- The day is refunded as well.
create temp table r_day as select * from public.acquire('m-day', 0);
select is((select a.reason from public.acquire('m-day', 0) as a), 'rpd', 'm-day: rpd 1 is spent');
select ok(public.release((select r.reservation_id from r_day as r)), 'release defaults to sent => false');
select is(
    (select a.granted from public.acquire('m-day', 0) as a), true, 'the refunded request frees the day'
);

-- After a commit, release changes nothing.
create temp table r_commit as select * from public.acquire('m-commit', 500);
select ok(public.commit_usage((select r.reservation_id from r_commit as r), 300), 'setup: committed');
select is(
    public.release((select r.reservation_id from r_commit as r), 'finally', false), false,
    'release after commit returns false'
);
select results_eq(
    $$select r.status, r.counted_requests::int, r.counted_tokens
      from public.google_ai_reservations as r where r.id = (select x.reservation_id from r_commit as x)$$,
    $$values ('committed'::text, 1, 300)$$,
    'and leaves the committed reservation as it was'
);

select * from finish();
rollback;

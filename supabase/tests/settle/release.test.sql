-- A call that did not complete settles as a release (release_reservation):
-- unsent (not_sent, connect_failed) refunds the request and its tokens
-- (window and day), sent (a timeout, a 5xx) keeps them counted; the ledger
-- row keeps why. Settling again changes nothing, and a release after a
-- commit changes nothing.
begin;
-- Steering llm_limits.now/clock_skew needs the owner-only switch (rolled back with the test).
update google_ai_internal.clock_switch set steerable = true;
select plan(19);

set local "llm_limits.now" = '2026-03-01 12:00:00+00';
insert into public.google_ai_model_limits (model, api_model, rpm, tpm, rpd) values
('m-unsent', 'm-unsent', 1, 1000, null),
('m-sent', 'm-sent', 1, 1000, null),
('m-day', 'm-day', null, null, 1),
('m-commit', 'm-commit', 1, 1000, null);
insert into public.google_ai_api_keys (key_alias, env_var_name, quota_group)
values ('k1', 'TEST_KEY_1', 'proj-1');

create function pg_temp.ledger(p_id uuid) returns table (status text, requests int, tokens int)
language sql as $$
    select r.status, r.counted_requests::int, r.counted_tokens
    from public.google_ai_reservations as r where r.id = p_id
$$;

-- Nothing sent: refunded.
create temp table r_unsent as select * from public.acquire('m-unsent', 800);
select is(
    (select a.reason from public.acquire('m-unsent', 10) as a), 'rpm', 'm-unsent: the window is full'
);
select results_eq(
    $$select s.action, s.retry from public.settle(
        (select r.reservation_id from r_unsent as r), null, null, 'not_sent') as s$$,
    $$values ('release_unsent'::text, false)$$,
    'not_sent: release_unsent'
);
select results_eq(
    $$select * from pg_temp.ledger((select r.reservation_id from r_unsent as r))$$,
    $$values ('released'::text, 0, 0)$$,
    'the released reservation counts nothing'
);
select is(
    (select r.details -> 'released' from public.google_ai_reservations as r
     where r.id = (select x.reservation_id from r_unsent as x)),
    '{"reason": "not_sent", "previous_status": "reserved"}'::jsonb,
    'the ledger row keeps why and what it was'
);
select is(
    (select a.granted from public.acquire('m-unsent', 1000) as a), true,
    'the refused request is now granted, with the refunded tokens too'
);
select is(
    (select s.action from public.settle(
        (select r.reservation_id from r_unsent as r), null, null, 'not_sent') as s),
    'release_unsent', 'settling it again answers the same'
);
select is(
    (select s.window_requests from public.google_ai_quota_state as s
     where s.quota_group = 'proj-1' and s.model = 'm-unsent'),
    1, 'and does not refund twice'
);

-- Maybe sent: kept counted.
create temp table r_sent as select * from public.acquire('m-sent', 800);
select is(
    (select s.action from public.settle(
        (select r.reservation_id from r_sent as r), null, null, 'timeout') as s),
    'release_sent', 'timeout: release_sent'
);
select results_eq(
    $$select * from pg_temp.ledger((select r.reservation_id from r_sent as r))$$,
    $$values ('released'::text, 1, 800)$$,
    'a call that may have reached Google stays counted'
);
select is(
    (select a.reason from public.acquire('m-sent', 10) as a), 'rpm',
    'the next request is still refused'
);
select is(
    (select s.action from public.settle(
        (select r.reservation_id from r_sent as r), null, null, 'not_sent') as s),
    'release_unsent', 'settling it again as not sent'
);
select is(
    (select a.reason from public.acquire('m-sent', 10) as a), 'rpm',
    'does not refund it after all'
);

-- The day is refunded as well.
create temp table r_day as select * from public.acquire('m-day', 0);
select is((select a.reason from public.acquire('m-day', 0) as a), 'rpd', 'm-day: rpd 1 is spent');
select is(
    (select s.action from public.settle(
        (select r.reservation_id from r_day as r), null, null, 'connect_failed') as s),
    'release_unsent', 'connect_failed: nothing was sent'
);
select is(
    (select a.granted from public.acquire('m-day', 0) as a), true, 'the refunded request frees the day'
);

-- After a commit, a release changes nothing.
create temp table r_commit as select * from public.acquire('m-commit', 500);
select is(
    (select s.action from public.settle(
        (select r.reservation_id from r_commit as r), 200,
        '{"usageMetadata": {"promptTokenCount": 300, "candidatesTokenCount": 10}}') as s),
    'commit', 'setup: committed'
);
select is(
    (select s.action from public.settle(
        (select r.reservation_id from r_commit as r), null, null, 'not_sent') as s),
    'release_unsent', 'a not_sent after the commit'
);
select results_eq(
    $$select * from pg_temp.ledger((select r.reservation_id from r_commit as r))$$,
    $$values ('committed'::text, 1, 300)$$,
    'leaves the committed reservation as it was'
);
select is(
    (select r.details from public.google_ai_reservations as r
     where r.id = (select x.reservation_id from r_commit as x)),
    null, 'with no release recorded'
);

select * from finish();
rollback;

-- Per-person limits: a person of an interactive caller gets 6 grants in any
-- window and 300 a Pacific day, over the same exact rolling log as the pool
-- (the k-th oldest grant frees the slot); past them acquire answers
-- end_user_limit with the truthful retry_after_ms before any pool slot is
-- taken, and a WAIT waits for it only when its max_wait_ms reaches it. A
-- person's own row raises or lowers them; other people, and callers of
-- classes without per-person defaults, are not limited.
begin;
update google_ai_internal.clock_switch set steerable = true;
select plan(21);

set local "llm_limits.now" = '2026-03-01 12:00:00+00';  -- 04:00 in Los Angeles
insert into public.google_ai_model_limits (model, api_model, rpm, tpm, rpd)
values ('m', 'm-api', 100, null, 10000);
insert into public.google_ai_api_keys (key_alias, env_var_name) values ('k1', 'TEST_KEY_1');
insert into public.google_ai_caller_policies (caller, caller_class) values ('bot', 'interactive');

select results_eq(
    $$select c.end_user_rpm, c.end_user_rpd from public.google_ai_caller_classes as c
      order by c.priority$$,
    $$values (6, 300), (null::integer, null::integer), (null, null)$$,
    'interactive people get 6 a minute and 300 a day; the other classes no per-person limit'
);

create function pg_temp.ask(
    p_at timestamptz, p_who text, p_mode text default 'NO_WAIT', p_wait integer default 0,
    p_ticket uuid default null, p_caller text default 'bot'
)
returns public.acquire_result
language plpgsql as $$
begin
    perform set_config('llm_limits.now', p_at::text, true);
    return public.acquire('m', 10, p_mode, p_wait, null, p_caller, null, p_ticket, p_who);
end;
$$;

-- tg:1 sends one message every 5 s from 12:00:00.
select is(
    (select count(*)::int from generate_series(0, 5) as i
     where (pg_temp.ask('2026-03-01 12:00:00+00'::timestamptz + i * interval '5 s', 'tg:1')).granted),
    6, 'six grants in a minute'
);
create temp table seventh as select * from pg_temp.ask('2026-03-01 12:00:30+00', 'tg:1');
select results_eq(
    $$select s.granted, s.reason, s.retry_after_ms, s.reservation_id is null from seventh as s$$,
    $$values (false, 'end_user_limit'::text, 31000, true)$$,
    'the seventh is refused until the oldest grant leaves the window (12:00:00 + 61 s)'
);
select is(
    (select count(*)::int from public.google_ai_reservations where model = 'm'), 6,
    'the refusal took no pool slot'
);
select is(
    (select q.window_requests::int from public.google_ai_quota_state as q where q.model = 'm'), 6,
    'and the window counts the six grants only'
);
select is(
    (pg_temp.ask('2026-03-01 12:00:30+00', 'tg:2')).granted, true,
    'another person is served meanwhile'
);
select is(
    (pg_temp.ask('2026-03-01 12:01:00.999+00', 'tg:1')).reason, 'end_user_limit',
    'a moment before the slot frees, still refused'
);
select is(
    (pg_temp.ask('2026-03-01 12:01:01.001+00', 'tg:1')).granted, true,
    'once the oldest grant has left the window, granted'
);
select results_eq(
    $$select a.reason, a.retry_after_ms from pg_temp.ask('2026-03-01 12:01:02+00', 'tg:1') as a$$,
    $$values ('end_user_limit'::text, 4000)$$,
    'then the next slot is the second oldest grant''s (12:00:05 + 61 s)'
);

-- WAIT: within max_wait_ms the person waits for their slot, out of line.
create temp table waiting as select * from pg_temp.ask('2026-03-01 12:01:02+00', 'tg:1', 'WAIT', 5000);
select results_eq(
    $$select w.granted, w.reason, w.retry_after_ms, w.expected_wait_ms, w.queue_position,
             w.ticket is not null
      from waiting as w$$,
    $$values (false, 'queued'::text, 4000, 4000, null::integer, true)$$,
    'a WAIT whose max_wait_ms reaches the slot is told to call back then'
);
select is(
    (select count(*)::int from google_ai_internal.wait_tickets where model = 'm'), 0,
    'and holds no place in line meanwhile'
);
select is(
    (select (pg_temp.ask('2026-03-01 12:01:06.5+00', 'tg:1', 'WAIT', 1000, w.ticket)).granted
     from waiting as w),
    true, 'calling back with the ticket then, it is granted'
);
select results_eq(
    $$select a.reason, a.retry_after_ms
      from pg_temp.ask('2026-03-01 12:01:07+00', 'tg:1', 'WAIT', 1000) as a$$,
    $$values ('end_user_limit'::text, 4000)$$,
    'a WAIT whose max_wait_ms ends before the slot is refused at once, truthfully'
);

-- A person's own row: raised, lowered.
select is(public.limit_end_user('tg:1', rpm => 20), google_ai_internal.end_user_label(
    google_ai_internal.end_user_hash('tg:1')
), 'limit_end_user answers the person''s label');
select is(
    (pg_temp.ask('2026-03-01 12:01:07+00', 'tg:1')).granted, true,
    'raised to 20 a minute, tg:1 is served again'
);
select lives_ok($$select public.limit_end_user('tg:2', rpm => 1)$$, 'tg:2 lowered');
select is(
    (pg_temp.ask('2026-03-01 12:01:07+00', 'tg:2')).reason, 'end_user_limit',
    'lowered to 1 a minute, tg:2 (one grant at 12:00:30) is refused'
);

-- The day: 300 a Pacific day (here a row of 2 for tg:3), until Pacific midnight.
select lives_ok($$select public.limit_end_user('tg:3', rpm => 100, rpd => 2)$$, 'tg:3: 2 a day');
select ok(
    (pg_temp.ask('2026-03-01 12:02:00+00', 'tg:3')).granted
    and (pg_temp.ask('2026-03-01 12:03:00+00', 'tg:3')).granted,
    'two grants on the day'
);
select results_eq(
    $$select a.reason, a.retry_after_ms from pg_temp.ask('2026-03-01 12:04:00+00', 'tg:3') as a$$,
    $$values ('end_user_limit'::text, (20 * 3600 - 4 * 60) * 1000)$$,
    'past their day, refused until Pacific midnight (08:00 UTC)'
);

-- A caller of a class without per-person defaults: its people are not limited.
select is(
    (select count(*)::int from generate_series(1, 10) as i
     where (pg_temp.ask('2026-03-01 12:05:00+00'::timestamptz + i * interval '1 s', 'tg:1',
                        p_caller => 'notebook')).granted),
    10, 'a default-class caller''s end users have no per-person limit'
);

select * from finish();
rollback;

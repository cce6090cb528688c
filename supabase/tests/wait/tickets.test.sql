-- WAIT with a ticket: a place in line kept between calls. 'queued' answers
-- say when to call again and are not audited; the final verdict is, once;
-- a grant or a final refusal gives the place up; a place whose owner
-- stopped calling back stops holding the line. Real clock, 60 s window.
begin;
select plan(16);

update public.google_ai_settings set wait_slice_ms = 300;
insert into public.google_ai_model_limits (model, api_model, rpm, tpm, rpd)
values ('test-model', 'test-model', 1, null, null), ('free-model', 'free-model', 100, null, null);
insert into public.google_ai_api_keys (key_alias, env_var_name, quota_group)
values ('k1', 'TEST_KEY_1', 'proj-1');

select is((select a.granted from public.acquire('test-model', 0) as a), true, 'the one request of the minute');

create temp table r_first as
select * from public.acquire(
    'test-model', 0, 'WAIT', 30000, null, 'first', null, '00000000-0000-4000-8000-000000000001'
);
select results_eq(
    'select r.granted, r.reason, r.retry_after_ms from r_first as r',
    $$values (false, 'queued'::text, 0)$$,
    'a new ticket at the head of the line: queued, call again at once'
);
select cmp_ok((select r.waited_ms from r_first as r), '<', 200, 'the first call returns at once (its place must be committed)');

create temp table r_second as
select * from public.acquire(
    'test-model', 0, 'WAIT', 30000, null, 'second', null, '00000000-0000-4000-8000-000000000002'
);
select is((select r.reason from r_second as r), 'queued', 'a second ticket queues behind the first');
select ok(
    (select r.retry_after_ms between 500 and 1000 from r_second as r),
    'and sleeps in the client: its turn is a minute away, but it looks again when the one '
    'ahead, not in a call now, would be found gone (due + wait_ticket_grace_ms)'
);

create temp table r_plain as select * from public.acquire('test-model', 0, 'WAIT', 5000);
select results_eq(
    'select r.granted, r.reason, r.waited_ms < 200 from r_plain as r',
    $$values (false, 'queued'::text, true)$$,
    'a caller without a ticket is refused at once while ticket holders wait'
);
select cmp_ok(
    (select r.retry_after_ms from r_plain as r), '>=', (select r.retry_after_ms from r_second as r),
    'its retry_after_ms is no sooner than the turn of those ahead'
);

create temp table r_head as
select * from public.acquire(
    'test-model', 0, 'WAIT', 30000, null, 'first', null, '00000000-0000-4000-8000-000000000001'
);
select results_eq(
    'select r.granted, r.reason, r.retry_after_ms from r_head as r',
    $$values (false, 'queued'::text, 0)$$,
    'the head waits one slice in the database, then is told to call again at once'
);
select cmp_ok((select r.waited_ms from r_head as r), '>=', 300, 'waited_ms counts the whole wait');

select is(
    (select count(*)::int from public.google_ai_audit_log as a
     where a.event = 'refused' and a.details ->> 'caller' in ('first', 'second')),
    0, 'queued answers to ticket holders are not audited'
);

create temp table r_last as
select * from public.acquire(
    'test-model', 0, 'WAIT', 0, null, 'first', null, '00000000-0000-4000-8000-000000000001'
);
select results_eq(
    $$select r.granted, r.reason, r.retry_after_ms > 50000 from r_last as r$$,
    $$values (false, 'wait_timeout'::text, true)$$,
    'at the deadline: wait_timeout, with when the window frees'
);
select results_eq(
    $$select a.details ->> 'reason', (a.details ->> 'rounds')::int >= 3
      from public.google_ai_audit_log as a
      where a.event = 'refused' and a.details ->> 'caller' = 'first'$$,
    $$values ('wait_timeout'::text, true)$$,
    'the wait is audited once, with its rounds'
);
select is(
    (select count(*)::int from google_ai_internal.wait_tickets as t
     where t.id = '00000000-0000-4000-8000-000000000001'),
    0, 'a final refusal gives the place up'
);

-- The second ticket's owner is long overdue: its place no longer holds the line.
update google_ai_internal.wait_tickets
set due_at = due_at - interval '1 hour', alive_until = alive_until - interval '1 hour';
select is(
    (select r.reason from public.acquire(
        'test-model', 0, 'WAIT', 5000, null, 'third', null, '00000000-0000-4000-8000-000000000003'
    ) as r),
    'queued', 'a newcomer behind an expired place is the head'
);
select is(
    google_ai_internal.queue_waiters('test-model'), 1,
    'quota_status counts the live place only'
);

select is(
    (select r.granted from public.acquire(
        'free-model', 0, 'WAIT', 5000, null, 'free', null, '00000000-0000-4000-8000-000000000004'
    ) as r),
    true, 'with room, a ticket holder is granted in its first call and keeps no place'
);

select * from finish();
rollback;

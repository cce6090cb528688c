-- An outage of Google does not burn the window: after outage_after_failures
-- failures in a row (5xx, timeouts) the quota group and model cool down; then
-- one probe goes through while the others are held; a failed probe doubles
-- the cooldown up to outage_cooldown_max_ms; an answer ends the outage. Each
-- cooldown and the end are audited; 0 turns it off; bad settings raise.
begin;
update google_ai_internal.clock_switch set steerable = true;
select plan(37);

set local "llm_limits.now" = '2026-03-01 12:00:00+00';
update public.google_ai_settings
set outage_after_failures = 3, outage_cooldown_ms = 1000, outage_cooldown_max_ms = 4000;
insert into public.google_ai_model_limits (model, api_model, rpm, tpm, rpd)
values ('m', 'm-api', 1000, null, null);
insert into public.google_ai_api_keys (key_alias, env_var_name, quota_group) values
('k1', 'TEST_KEY_1', 'proj-1'),
('k2', 'TEST_KEY_2', 'proj-2');

create function pg_temp.grant_on(p_key text) returns uuid language sql as $$
    select a.reservation_id from public.acquire('m', 10, 'NO_WAIT', 0, array[p_key]) as a
$$;
create function pg_temp.try_on(p_key text) returns table (granted boolean, reason text, retry_after_ms int)
language sql as $$
    select a.granted, a.reason, a.retry_after_ms
    from public.acquire('m', 10, 'NO_WAIT', 0, array[p_key]) as a
$$;
create function pg_temp.fail(p_id uuid, p_status int default 503) returns text language sql as $$
    select s.action from public.settle(p_id, p_status, '{"error": {"code": 503, "status": "UNAVAILABLE"}}') as s
$$;
create function pg_temp.window_of(p_group text)
returns table (failures int, cooldown_ms int, until timestamptz, reason text)
language sql as $$
    select s.failures_in_a_row, s.outage_cooldown_ms, s.cooldown_until, s.cooldown_reason
    from public.google_ai_quota_state as s where s.quota_group = p_group and s.model = 'm'
$$;
create function pg_temp.cooldowns() returns table (cause text, failures int, ms int, until timestamptz, probe boolean)
language sql as $$
    select a.details ->> 'cause', (a.details ->> 'failures_in_a_row')::int,
        (a.details ->> 'cooldown_ms')::int, (a.details ->> 'cooldown_until')::timestamptz,
        (a.details ->> 'probe')::boolean
    from public.google_ai_audit_records as a where a.event = 'outage_cooldown' order by a.id
$$;

-- Four attempts in flight when Google goes down.
create temp table wave as
select i, pg_temp.grant_on('k1') as id from generate_series(1, 4) as i;

set local "llm_limits.now" = '2026-03-01 12:00:00.100+00';
select is(pg_temp.fail((select w.id from wave as w where w.i = 1)), 'release_sent', 'a 503 is still released as sent');
select pg_temp.fail((select w.id from wave as w where w.i = 2));
select results_eq(
    $$select * from pg_temp.window_of('proj-1')$$,
    $$values (2, null::int, null::timestamptz, null::text)$$,
    'two failures in a row: counted, no cooldown yet'
);
select is((select t.granted from pg_temp.try_on('k1') as t), true, 'and acquire still grants');
select results_eq(
    $$select s.action, s.retry from public.settle((select w.id from wave as w where w.i = 3), null, null, 'timeout') as s$$,
    $$values ('release_sent'::text, true)$$,
    'a timeout: settle answers as before'
);
select results_eq(
    $$select * from pg_temp.window_of('proj-1')$$,
    $$values (3, 1000, '2026-03-01 12:00:01.100+00'::timestamptz, 'upstream_outage'::text)$$,
    'the third failure in a row cools the group down for outage_cooldown_ms from its settlement'
);
select results_eq(
    $$select * from pg_temp.cooldowns()$$,
    $$values ('timeout'::text, 3, 1000, '2026-03-01 12:00:01.100+00'::timestamptz, false)$$,
    'the cooldown is audited with its cause'
);
select results_eq(
    $$select * from pg_temp.try_on('k1')$$,
    $$values (false, 'cooldown'::text, 1000)$$,
    'acquire refuses the group: reason cooldown, retry when it ends'
);
select is((select t.granted from pg_temp.try_on('k2') as t), true, 'another quota group is not affected');

set local "llm_limits.now" = '2026-03-01 12:00:00.200+00';
select pg_temp.fail((select w.id from wave as w where w.i = 4));
select results_eq(
    $$select w.failures, w.until from pg_temp.window_of('proj-1') as w$$,
    $$values (4, '2026-03-01 12:00:01.100+00'::timestamptz)$$,
    'an attempt granted before the cooldown fails with the rest and changes no cooldown'
);
select is((select count(*)::int from pg_temp.cooldowns()), 1, 'nor writes another audit row');
select is(pg_temp.fail((select w.id from wave as w where w.i = 4)), 'release_sent', 'settling it again answers the same');
select is((select w.failures from pg_temp.window_of('proj-1') as w), 4, 'and counts nothing twice');

-- Half-open: after the cooldown one probe goes through, the others are held.
set local "llm_limits.now" = '2026-03-01 12:00:01.500+00';
create temp table probe1 as select pg_temp.grant_on('k1') as id;
select isnt((select p.id from probe1 as p), null, 'after the cooldown one grant goes through: the probe');
select results_eq(
    $$select w.until, w.reason from pg_temp.window_of('proj-1') as w$$,
    $$values ('2026-03-01 12:00:05.500+00'::timestamptz, 'upstream_probe'::text)$$,
    'while it is out, the group is held for outage_cooldown_max_ms at most'
);
select results_eq(
    $$select * from pg_temp.try_on('k1')$$,
    $$values (false, 'cooldown'::text, 1000)$$,
    'the next caller is held, told to look again after outage_cooldown_ms'
);
select is(
    (select q.cooldown_reason from public.quota_status() as q where q.quota_group = 'proj-1' and q.model = 'm'),
    'upstream_probe', 'quota_status shows the hold'
);
-- The head of a WAIT line on k1, for a waiter behind it to be told its turn.
create temp table head_ticket as
select gen_random_uuid() as id;
insert into google_ai_internal.wait_tickets (
    id, model, key_set, tokens, created_at, due_at, turn_at, alive_until, deadline
)
select
    t.id, 'm' as model, google_ai_internal.queue_key_set(array['k1']) as key_set,
    10 as tokens, now() as created_at, now() as due_at, now() as turn_at,
    now() + interval '1 h' as alive_until, now() + interval '1 h' as deadline
from head_ticket as t;
select is(
    (google_ai_internal.turn_estimate(
        (select m from public.google_ai_model_limits as m where m.model = 'm'),
        array(select c from google_ai_internal.candidates('m', array['k1'], google_ai_internal.clock(), 10) as c),
        array[(select t.id from head_ticket as t)], 10, null::google_ai_internal.caller_policy,
        google_ai_internal.settings()
    )).turn,
    '2026-03-01 12:00:02.500+00'::timestamptz,
    'a waiter behind the head is told the same, not the hold''s end: the answer may come any time'
);

-- A failed probe doubles the cooldown, up to the cap.
set local "llm_limits.now" = '2026-03-01 12:00:02+00';
select pg_temp.fail((select p.id from probe1 as p));
select results_eq(
    $$select * from pg_temp.window_of('proj-1')$$,
    $$values (5, 2000, '2026-03-01 12:00:04+00'::timestamptz, 'upstream_outage'::text)$$,
    'the probe failed: twice as long, from its settlement'
);
set local "llm_limits.now" = '2026-03-01 12:00:04.500+00';
create temp table probe2 as select pg_temp.grant_on('k1') as id;
set local "llm_limits.now" = '2026-03-01 12:00:05+00';
select pg_temp.fail((select p.id from probe2 as p), 500);
set local "llm_limits.now" = '2026-03-01 12:00:09.500+00';
create temp table probe3 as select pg_temp.grant_on('k1') as id;
set local "llm_limits.now" = '2026-03-01 12:00:10+00';
select pg_temp.fail((select p.id from probe3 as p));
select results_eq(
    $$select c.cause, c.ms, c.probe from pg_temp.cooldowns() as c$$,
    $$values ('timeout'::text, 1000, false), ('http 503', 2000, true), ('http 500', 4000, true),
             ('http 503', 4000, true)$$,
    'each failed probe is audited; the cooldown grows 1 s, 2 s, 4 s and stays at the cap'
);
select is((select count(*)::int from public.google_ai_reservations as r where r.quota_group = 'proj-1'
           and r.granted_at > '2026-03-01 12:00:00.100+00' and r.status = 'released'), 3,
          'during the outage only the probes took slots');

-- A probe that is never settled holds the others for the cap at most.
set local "llm_limits.now" = '2026-03-01 12:00:14.500+00';
create temp table lost_probe as select pg_temp.grant_on('k1') as id;
set local "llm_limits.now" = '2026-03-01 12:00:18.400+00';
select is((select t.reason from pg_temp.try_on('k1') as t), 'cooldown', 'a lost probe holds the others');
set local "llm_limits.now" = '2026-03-01 12:00:18.600+00';
create temp table probe4 as select pg_temp.grant_on('k1') as id;
select isnt((select p.id from probe4 as p), null, 'for outage_cooldown_max_ms, then another probe goes');

-- A probe settled without an answer (nothing sent) lets the next grant probe at once.
set local "llm_limits.now" = '2026-03-01 12:00:18.700+00';
select is(
    (select s.action from public.settle((select p.id from probe4 as p), null, null, 'connect_failed') as s),
    'release_unsent', 'the probe could not be sent'
);
create temp table probe5 as select pg_temp.grant_on('k1') as id;
select isnt((select p.id from probe5 as p), null, 'the next grant probes without waiting for the hold');

-- An answer ends the outage at once.
set local "llm_limits.now" = '2026-03-01 12:00:19+00';
select is(
    (select s.action from public.settle((select p.id from probe5 as p), 200,
        '{"usageMetadata": {"promptTokenCount": 8, "candidatesTokenCount": 2}}') as s),
    'commit', 'the probe is answered'
);
select results_eq(
    $$select * from pg_temp.window_of('proj-1')$$,
    $$values (0, null::int, null::timestamptz, null::text)$$,
    'the outage is over: no cooldown, no failures in a row'
);
select results_eq(
    $$select a.details ->> 'answer', (a.details ->> 'failures_in_a_row')::int, (a.details ->> 'last_cooldown_ms')::int
      from public.google_ai_audit_records as a where a.event = 'outage_ended'$$,
    $$values ('http 200'::text, 7, 4000)$$,
    'and audited as outage_ended'
);
select is(
    (select count(*)::int from generate_series(1, 3) as i cross join lateral pg_temp.try_on('k1') as t where t.granted),
    3, 'everyone is granted again'
);
select is(pg_temp.fail((select l.id from lost_probe as l)), 'release_sent', 'the lost probe settles late');
select results_eq(
    $$select w.failures, w.cooldown_ms from pg_temp.window_of('proj-1') as w$$,
    $$values (1, null::int)$$,
    'as the first failure of a new count'
);

-- Any answer counts: a 400 ends the count; a 429 ends an outage but keeps its own cooldown.
select pg_temp.fail(pg_temp.grant_on('k1'), 400);
select is((select w.failures from pg_temp.window_of('proj-1') as w), 0, 'a 400 is an answer: the count starts over');
select pg_temp.fail(pg_temp.grant_on('k1'));
select public.settle(pg_temp.grant_on('k1'), null, null, 'connect_failed');
select is((select w.failures from pg_temp.window_of('proj-1') as w), 1, 'nothing sent is neither a failure nor an answer');
create temp table late as select pg_temp.grant_on('k1') as id;
select pg_temp.fail(pg_temp.grant_on('k1'));
select pg_temp.fail(pg_temp.grant_on('k1'));
select is((select w.reason from pg_temp.window_of('proj-1') as w), 'upstream_outage', 'a new outage');
select public.settle((select l.id from late as l), 429,
    '{"error": {"code": 429, "details": [{"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": "30s"}]}}');
select results_eq(
    $$select * from pg_temp.window_of('proj-1')$$,
    $$values (0, null::int, '2026-03-01 12:00:49+00'::timestamptz, 'rate_limited'::text)$$,
    'a 429 ends the outage, and its own cooldown stays'
);

-- 0 turns it off.
update public.google_ai_settings set outage_after_failures = 0;
select pg_temp.fail(pg_temp.grant_on('k2')) from generate_series(1, 5);
select results_eq(
    $$select * from pg_temp.window_of('proj-2')$$,
    $$values (0, null::int, null::timestamptz, null::text)$$,
    'with outage_after_failures = 0 failures cool nothing down'
);

-- Bad settings are refused and change nothing.
select throws_ok(
    $$update public.google_ai_settings set outage_cooldown_ms = 5000, outage_cooldown_max_ms = 4000$$,
    '23514', null, 'the cap may not be below the first cooldown'
);
select throws_ok(
    $$update public.google_ai_settings set outage_after_failures = -1$$, '23514', null,
    'a negative threshold is refused'
);

select * from finish();
rollback;

-- Fallback chains and the order of the queue. The day of a model spent, a
-- caller whose class may fall back is served by the next model of the chain
-- (0 refusals; the grant names the model served; the ledger says so), and a
-- batch caller gets rpd with the time to Pacific midnight. The queue serves
-- by class priority, aged: a batch waiter that waited aging_ms is ahead of an
-- interactive one that came later.
begin;
update google_ai_internal.clock_switch set steerable = true;
select plan(10);

set local "llm_limits.now" = '2026-03-01 12:00:00+00';
insert into public.google_ai_model_limits (model, api_model, rpm, tpm, rpd) values
('big', 'big-it', 100, null, 2), ('small', 'small-it', 100, null, 100);
insert into public.google_ai_fallbacks (model, fallback_model) values ('big', 'small');
insert into public.google_ai_api_keys (key_alias, env_var_name, quota_group)
values ('k1', 'TEST_KEY_1', 'proj-1');
insert into public.google_ai_caller_policies (caller, caller_class) values
('bot', 'interactive'), ('notebook', 'batch');

select is(
    google_ai_internal.fallback_chain('big'), array['big', 'small'], 'the chain of big'
);
select is(
    (select count(*)::int from generate_series(1, 2) as i
        cross join lateral public.acquire('big', 1 + 0 * i, 'NO_WAIT', 0, null, 'notebook') as a where a.granted and a.model = 'big-it'),
    2, 'the day of big is spent'
);
create temp table fb as select * from public.acquire('big', 1, 'WAIT', 30000, null, 'bot');
select results_eq(
    $$select f.granted, f.model from fb as f$$, $$values (true, 'small-it'::text)$$,
    'the bot is served by small, and told so'
);
select is(
    (select r.details #>> '{granted,fallback_from}' from public.google_ai_reservations as r
     where r.id = (select f.reservation_id from fb as f)),
    'big', 'the ledger records the fallback'
);
select is(
    (select a.model from public.acquire('big', 1, 'NO_WAIT', 0, null, 'bot') as a where a.granted),
    'small-it', 'NO_WAIT falls back too'
);
select results_eq(
    $$select a.granted, a.reason, a.retry_after_ms
      from public.acquire('big', 1, 'WAIT', 30000, null, 'notebook') as a$$,
    $$values (false, 'rpd'::text, 20 * 3600 * 1000)$$,
    'batch may not fall back: rpd until Pacific midnight'
);
select is(
    (select count(*)::int from public.google_ai_audit_log as a
     where a.event = 'refused' and a.details ->> 'caller' = 'bot'),
    0, 'no refusal of the bot is recorded'
);

-- The queue's order: priority, aged over aging_ms (60 s), then ticket order.
select cmp_ok(
    google_ai_internal.queue_rank(90, '2026-03-01 11:59:30+00', '2026-03-01 12:00:00+00', 60000),
    '>', google_ai_internal.queue_rank(10, '2026-03-01 12:00:00+00', '2026-03-01 12:00:00+00', 60000),
    'a batch waiter of 30 s still ranks below a new interactive one'
);
select is(
    google_ai_internal.queue_rank(90, '2026-03-01 11:59:00+00', '2026-03-01 12:00:00+00', 60000),
    0::double precision, 'after aging_ms it ranks at the top'
);
select is(
    google_ai_internal.queue_rank(10, '2026-03-01 12:00:00+00', '2026-03-01 12:00:00+00', 60000),
    10::double precision, 'a new interactive waiter ranks at its priority'
);

select * from finish();
rollback;

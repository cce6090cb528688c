-- Fallback chains and the order of the queue. The day of a model spent, a
-- caller whose class may fall back is served by the next model of the chain
-- (0 refusals; the grant names the model served; the ledger says so), and a
-- batch caller gets rpd with the time to Pacific midnight. The queue serves
-- by class priority; aging lifts only a class that starves.
begin;
update google_ai_internal.clock_switch set steerable = true;
select plan(11);

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

-- The queue's order: class priority, then ticket order; aging lifts only a
-- starving class (a waiter of aging_ms, and no grant of its class within it).
insert into google_ai_internal.wait_tickets (
    id, model, key_set, tokens, created_at, due_at, turn_at, alive_until, deadline, priority,
    caller_class
) values
('a23a0000-0000-4000-8000-000000000001', 'big', 'q', 1, '2026-03-01 11:59:00+00',
 '2026-03-01 12:00:00+00', '2026-03-01 12:00:00+00', '2026-03-01 12:05:00+00',
 '2026-03-01 12:10:00+00', 90, 'batch'),
('a23a0000-0000-4000-8000-000000000002', 'big', 'q', 1, '2026-03-01 11:59:30+00',
 '2026-03-01 12:00:00+00', '2026-03-01 12:00:00+00', '2026-03-01 12:05:00+00',
 '2026-03-01 12:10:00+00', 90, 'batch'),
('a23a0000-0000-4000-8000-000000000003', 'big', 'q', 1, '2026-03-01 12:00:30+00',
 '2026-03-01 12:00:00+00', '2026-03-01 12:00:00+00', '2026-03-01 12:05:00+00',
 '2026-03-01 12:10:00+00', 10, 'interactive');
select is(
    google_ai_internal.starving_classes('big', 'q', array['proj-1'], '2026-03-01 12:00:00+00', 60000),
    '{}'::text [], 'no class starves while batch was granted within aging_ms (the day of big above)'
);
select is(
    (select google_ai_internal.queue_rank(t, '{}', '2026-03-01 12:00:00+00', 60000)
     from google_ai_internal.wait_tickets as t where t.id = 'a23a0000-0000-4000-8000-000000000001'),
    90, 'a batch waiter of 60 s ranks at its priority, below a new interactive one, under an ordinary load'
);
select is(
    google_ai_internal.starving_classes('big', 'q', array['proj-1'], '2026-03-01 12:01:05+00', 60000),
    '{batch}'::text [], 'batch starves once it waited aging_ms with no grant of its class within it'
);
select results_eq(
    $$select t.id::text, google_ai_internal.queue_rank(t, '{batch}', '2026-03-01 12:00:00+00', 60000)
      from google_ai_internal.wait_tickets as t where t.key_set = 'q' order by t.id$$,
    $$values ('a23a0000-0000-4000-8000-000000000001'::text, 0),
             ('a23a0000-0000-4000-8000-000000000002', 90),
             ('a23a0000-0000-4000-8000-000000000003', 10)$$,
    'a starving class''s waiter of aging_ms goes to the top; its younger one and the bot keep their ranks'
);

select * from finish();
rollback;

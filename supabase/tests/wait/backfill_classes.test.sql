-- Backfill only where the waiter's limits are the head's: a bot behind a
-- batch waiter that aging lifted to the top is not served in the slots the
-- batch heads the line for, though the window has room for both by the
-- bot's own limits; the batch, paced behind the class above, is served
-- once its pace allows, and the bot after it.
begin;
update google_ai_internal.clock_switch set steerable = true;
select plan(4);

update public.google_ai_settings
set wait_slice_ms = 300, wait_ticket_grace_ms = 1000, aging_ms = 1000;
set local "llm_limits.now" = '2026-03-01 12:00:00+00';
-- rpm 4 over a 61 s hold: the paced batch may take one grant per 15.25 s.
insert into public.google_ai_model_limits (model, api_model, rpm, tpm, rpd) values
('lift', 'lift', 4, null, null);
insert into public.google_ai_api_keys (key_alias, env_var_name, quota_group)
values ('k1', 'TEST_KEY_1', 'proj-1');
insert into public.google_ai_caller_policies (caller, caller_class) values
('bot', 'interactive'), ('nb', 'batch');

select is(
    (select count(*)::int from generate_series(1, 2) as i
     cross join lateral public.acquire('lift', 10, 'NO_WAIT', 0, null, 'bot', 'b' || i) as a
     where a.granted),
    2, 'two bot grants: two of four slots left, the pace moved two intervals'
);
-- The batch waits for its pace, and has waited past aging_ms with no batch grant at its
-- second call: its class starves, and it heads the line (due again at that call).
select is(
    (select a.reason from public.acquire(
        'lift', 10, 'WAIT', 120000, null, 'nb', null, 'a24c0000-0000-4000-8000-000000000001'
    ) as a),
    'queued', 'the batch waiter is paced'
);
set local "llm_limits.now" = '2026-03-01 12:00:01.2+00';
select is(
    (select a.reason from public.acquire(
        'lift', 10, 'WAIT', 120000, null, 'nb', null, 'a24c0000-0000-4000-8000-000000000001'
    ) as a),
    'queued', 'still paced, now at the top of the line'
);
set local "llm_limits.now" = '2026-03-01 12:00:02+00';
select results_eq(
    $$select a.granted, a.reason from public.acquire(
        'lift', 10, 'WAIT', 120000, null, 'bot', null, 'a24c0000-0000-4000-8000-000000000002'
    ) as a$$,
    $$values (false, 'queued'::text)$$,
    'a bot behind the lifted batch is not served in its slots, though both would fit'
);

select * from finish();
rollback;

-- A blocked person is refused at no cost to the pool: no grant, no window
-- touched, no place in line, and a flood of their calls folds into one
-- refusal row. unblock_end_user serves them again.
begin;
update google_ai_internal.clock_switch set steerable = true;
select plan(11);

set local "llm_limits.now" = '2026-03-01 12:00:00+00';
insert into public.google_ai_model_limits (model, api_model, rpm, tpm, rpd)
values ('m', 'm-api', 100, null, 10000);
insert into public.google_ai_api_keys (key_alias, env_var_name) values ('k1', 'TEST_KEY_1');
insert into public.google_ai_caller_policies (caller, caller_class) values ('bot', 'interactive');

select is(public.block_end_user('tg:666', 'spam'), true, 'block_end_user blocks');
select is(public.block_end_user('tg:666'), false, 'blocking again says they were blocked');

create function pg_temp.flood(p_calls integer, p_mode text) returns integer
language plpgsql as $$
declare
    refused integer := 0;
    v public.acquire_result;
begin
    for i in 1 .. p_calls loop
        perform set_config('llm_limits.now',
            ('2026-03-01 12:00:00+00'::timestamptz + i * interval '10 ms')::text, true);
        v := public.acquire('m', 10, p_mode, 5000, null, 'bot', null, null, 'tg:666');
        if not v.granted and v.reason = 'end_user_limit' and v.retry_after_ms is null then
            refused := refused + 1;
        end if;
    end loop;
    return refused;
end;
$$;

select is(pg_temp.flood(300, 'NO_WAIT'), 300,
          'every call refused end_user_limit, with no retry_after_ms');
select is(pg_temp.flood(5, 'WAIT'), 5, 'a WAIT too: a block is not waited out');
select is(
    (select count(*)::int from public.google_ai_reservations where model = 'm'), 0,
    'no grant was made'
);
select is(
    (select count(*)::int from public.google_ai_quota_state where model = 'm'), 0,
    'no window was touched'
);
select is(
    (select count(*)::int from google_ai_internal.wait_tickets where model = 'm'), 0,
    'no place in line'
);
select results_eq(
    $$select f.reason, f.refusals, f.end_user_hash = google_ai_internal.end_user_hash('tg:666')
      from public.google_ai_refusals as f where f.model = 'm'$$,
    $$values ('end_user_limit'::text, 305, true)$$,
    'the flood is one folded refusal row, for that person'
);
select is(
    (select count(*)::int from public.google_ai_audit_log where event = 'refused' and model = 'm'),
    1,
    'one refused event in the audit log'
);

select is(public.unblock_end_user('tg:666'), true, 'unblock_end_user serves them again');
select is(
    (public.acquire('m', 10, 'NO_WAIT', 0, null, 'bot', null, null, 'tg:666')).granted, true,
    'granted once unblocked'
);

select * from finish();
rollback;

-- What an operator sees of end users: usage_report by end_user (requests,
-- refusals by reason, per person's label), class_status's people waiting per
-- class, end_users() (rules, today's grants, tickets), and run_maintenance
-- deleting the people's day rows with the ledger's days.
begin;
update google_ai_internal.clock_switch set steerable = true;
select plan(9);

set local "llm_limits.now" = '2026-03-01 12:00:00+00';
insert into public.google_ai_model_limits (model, api_model, rpm, tpm, rpd)
values ('m', 'm-api', 8, null, 10000);
insert into public.google_ai_api_keys (key_alias, env_var_name) values ('k1', 'TEST_KEY_1');
insert into public.google_ai_caller_policies (caller, caller_class) values ('bot', 'interactive');

create function pg_temp.label(p_who text) returns text
language sql as $$
    select google_ai_internal.end_user_label(google_ai_internal.end_user_hash(p_who))
$$;

do $$
begin
    for i in 1 .. 7 loop  -- tg:1: six grants, one refusal end_user_limit
        perform public.acquire('m', 10, 'NO_WAIT', 0, null, 'bot', null, null, 'tg:1');
    end loop;
    perform public.acquire('m', 10, 'NO_WAIT', 0, null, 'bot', null, null, 'tg:2');
    perform public.acquire('m', 10, 'NO_WAIT', 0, null, 'bot', null, null, null);
    -- The window (8 RPM) is full: tg:2 and tg:3 wait, tg:2 twice.
    perform public.acquire('m', 10, 'WAIT', 60000, null, 'bot', null, null, 'tg:2');
    perform public.acquire('m', 10, 'WAIT', 60000, null, 'bot', null, null, 'tg:2');
    perform public.acquire('m', 10, 'WAIT', 60000, null, 'bot', null, null, 'tg:3');
end;
$$;

select results_eq(
    $$select r.bucket, r.requests, r.refusals, r.refusals_by_reason
      from public.usage_report(until => '2026-03-02', by => 'end_user') as r
      order by r.requests desc, r.bucket$$,
    format($$values (%L, 6::bigint, 1::bigint, '{"end_user_limit": 1}'::jsonb),
                    ('(no end user)', 1, 0, '{}'), (%L, 1, 0, '{}')$$,
           pg_temp.label('tg:1'), pg_temp.label('tg:2')),
    'usage_report by end_user: requests and refusals by reason per person'
);
select throws_ok(
    $$select * from public.usage_report(by => 'person')$$, 'LL007', null,
    'by must be one of the five'
);
select results_eq(
    $$select c.waiters, c.people_waiting, c.end_user_rpm, c.end_user_rpd
      from public.class_status() as c where c.caller_class = 'interactive'$$,
    $$values (3::bigint, 2::bigint, 6, 300)$$,
    'class_status: three tickets in line, two people waiting; the class''s per-person limits'
);

select ok(public.block_end_user('tg:9', 'spam'), 'tg:9 blocked');
select results_eq(
    $$select e.end_user, e.blocked, e.requests_today, e.requests_in_window, e.waiting
      from public.end_users() as e$$,
    format($$values (%L, true, 0, 0::bigint, 0::bigint), (%L, false, 6, 6, 0),
                    (%L, false, 1, 1, 2), (%L, false, 0, 0, 1)$$,
           pg_temp.label('tg:9'), pg_temp.label('tg:1'), pg_temp.label('tg:2'),
           pg_temp.label('tg:3')),
    'end_users(): the blocked first, then by grants today; tickets in line'
);
select is(
    (select count(*)::int from public.google_ai_end_user_usage), 2,
    'one day row per person granted today'
);

-- Nine days later, maintenance rolls the ledger up and the day rows go with it.
set local "llm_limits.now" = '2026-03-10 12:00:00+00';
update public.google_ai_reservations set status = 'committed';
select is(
    (public.run_maintenance() -> 'details' ->> 'end_user_days_deleted')::int, 2,
    'run_maintenance deletes the day rows of days the ledger no longer holds'
);
select is((select count(*)::int from public.google_ai_end_user_usage), 0, 'none is left');
select is(
    (select count(*)::int from public.google_ai_end_users), 1, 'the rules stay'
);

select * from finish();
rollback;

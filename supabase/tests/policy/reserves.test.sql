-- Reserves: a class's share of a limit that the classes below it may not
-- take. The RPD reserve is never lent; an RPM reserve is lent while its
-- class is idle (no grant in the window, nobody waiting).
begin;
update google_ai_internal.clock_switch set steerable = true;
select plan(8);

set local "llm_limits.now" = '2026-03-01 12:00:00+00';
insert into public.google_ai_model_limits (model, api_model, rpm, tpm, rpd)
values ('day-model', 'day-model', 1000, null, 20), ('minute-model', 'minute-model', 10, null, 1000);
insert into public.google_ai_api_keys (key_alias, env_var_name, quota_group)
values ('k1', 'TEST_KEY_1', 'proj-1');
insert into public.google_ai_caller_policies (caller, caller_class) values
('bot', 'interactive'), ('notebook', 'batch');

-- Batch is paced below the bot's class (one grant per hold / rpm): its calls
-- come one at a time here.
create function pg_temp.notebook_at(p_model text, p_at timestamptz) returns public.acquire_result
language plpgsql as $$
begin
    perform set_config('llm_limits.now', p_at::text, true);
    return public.acquire(p_model, 1, 'NO_WAIT', 0, null, 'notebook');
end;
$$;

-- RPD reserve 0.25: batch stops at 75% of the day, interactive goes to 100%.
update public.google_ai_caller_classes set rpd_reserve = 0.25 where name = 'interactive';
select is(
    (select count(*)::int from generate_series(0, 19) as i
     cross join lateral pg_temp.notebook_at(
         'day-model', '2026-03-01 11:59:40+00'::timestamptz + i * interval '1 s'
     ) as a where a.granted),
    15, 'batch is granted 15 of the day''s 20'
);
set local "llm_limits.now" = '2026-03-01 12:00:00+00';
select results_eq(
    $$select a.reason, a.retry_after_ms from public.acquire('day-model', 1, 'NO_WAIT', 0, null, 'notebook') as a$$,
    $$values ('rpd'::text, 20 * 3600 * 1000)$$,
    'then rpd, until Pacific midnight'
);
select is(
    (select count(*)::int from generate_series(1, 10) as i
        cross join lateral public.acquire('day-model', 1 + 0 * i, 'NO_WAIT', 0, null, 'bot') as a where a.granted),
    5, 'interactive is served to 100% of the day'
);

-- RPM reserve 0.5, the bot idle: batch borrows it all, one grant per 6.1 s.
update public.google_ai_caller_classes set rpm_reserve = 0.5 where name = 'interactive';
select is(
    (select count(*)::int from generate_series(0, 9) as i
     cross join lateral pg_temp.notebook_at(
         'minute-model', '2026-03-01 11:58:50+00'::timestamptz + i * interval '6.1 s'
     ) as a where a.granted),
    10, 'while the bot is idle, batch uses the whole RPM'
);

-- A minute later (the window empty), the bot is active: batch keeps out of
-- its half, and is paced meanwhile (one grant per hold / rpm = 6.1 s).
set local "llm_limits.now" = '2026-03-01 12:01:05+00';
select is(
    (select a.granted from public.acquire('minute-model', 1, 'NO_WAIT', 0, null, 'bot') as a),
    true, 'the bot takes a slot'
);
create function pg_temp.batch_at(p_at timestamptz) returns public.acquire_result
language plpgsql as $$
begin
    perform set_config('llm_limits.now', p_at::text, true);
    return public.acquire('minute-model', 1, 'NO_WAIT', 0, null, 'notebook');
end;
$$;
create temp table paced as
select g.i, p.granted, p.reason, p.retry_after_ms
from generate_series(0, 5) as g (i)
cross join lateral pg_temp.batch_at('2026-03-01 12:01:05+00'::timestamptz + g.i * interval '6.1 s') as p;
select results_eq(
    $$select p.i, p.granted, p.reason from paced as p order by p.i$$,
    $$values (0, true, null::text), (1, true, null), (2, true, null), (3, true, null),
             (4, false, 'rpm'), (5, false, 'rpm')$$,
    'paced one per 6.1 s while the bot is active, and 4 in all: 10 x 0.5 x 61/60 slots kept'
);
select is(
    (select p.retry_after_ms from paced as p where p.i = 4), 61000 - 4 * 6100,
    'a truthful retry: when batch''s oldest grant in the window leaves it'
);
set local "llm_limits.now" = '2026-03-01 12:01:40+00';
select is(
    (select count(*)::int from generate_series(1, 10) as i
        cross join lateral public.acquire('minute-model', 1 + 0 * i, 'NO_WAIT', 0, null, 'bot') as a where a.granted),
    5, 'the bot, never paced, has the rest of the minute (10 - 4 - 1) at once'
);

select * from finish();
rollback;

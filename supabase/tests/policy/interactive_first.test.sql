-- The bot's users first: with no class above it that has members a caller
-- bursts the whole window; below a class with members it is paced (GCRA,
-- burst of two) and leaves the window's last slot to the class above while
-- that class is active. A WAIT of a class with fallback_after_ms is served
-- by a fallback that can grant now once it has waited that long; a batch
-- wait is not moved. A queued answer says the place in line and when the
-- turn is expected.
begin;
update google_ai_internal.clock_switch set steerable = true;
select plan(13);

update public.google_ai_settings set wait_slice_ms = 300;

set local "llm_limits.now" = '2026-03-01 12:00:00+00';
insert into public.google_ai_model_limits (model, api_model, rpm, tpm, rpd) values
('burst', 'burst', 10, null, null), ('minute', 'minute', 10, null, null),
('big', 'big-it', 1, null, null), ('small', 'small-it', 100, null, null);
insert into public.google_ai_fallbacks (model, fallback_model) values ('big', 'small');
insert into public.google_ai_api_keys (key_alias, env_var_name, quota_group)
values ('k1', 'TEST_KEY_1', 'proj-1');

select is(
    (select count(*)::int from generate_series(1, 10) as i
        cross join lateral public.acquire('burst', 1 + 0 * i, 'NO_WAIT', 0, null, 'notebook') as a where a.granted),
    10, 'no class above has members: a caller takes the whole window at once'
);

insert into public.google_ai_caller_policies (caller, caller_class) values
('bot', 'interactive'), ('notebook', 'batch');
set local "llm_limits.now" = '2026-03-01 12:05:00+00';
create temp table paced as
select g.i, a.granted, a.reason, a.retry_after_ms
from generate_series(1, 3) as g (i)
cross join lateral public.acquire('burst', 1 + 0 * g.i, 'NO_WAIT', 0, null, 'notebook') as a;
select results_eq(
    $$select p.granted, p.reason, p.retry_after_ms from paced as p order by p.i$$,
    $$values (true, null::text, null::int), (true, null, null), (false, 'rpm', 6100)$$,
    'once the bot has members, batch is paced: a burst of two, then one per hold / rpm'
);

-- Headroom: the bot active, batch (paced, one per 6.1 s) stops one slot short.
create function pg_temp.notebook_at(p_at timestamptz) returns public.acquire_result
language plpgsql as $$
begin
    perform set_config('llm_limits.now', p_at::text, true);
    return public.acquire('minute', 1, 'NO_WAIT', 0, null, 'notebook');
end;
$$;
set local "llm_limits.now" = '2026-03-01 12:10:00+00';
select is(
    (select a.granted from public.acquire('minute', 1, 'NO_WAIT', 0, null, 'bot') as a), true,
    'the bot is granted'
);
create temp table headroom as
select g.i, p.granted, p.reason, p.retry_after_ms
from generate_series(0, 8) as g (i)
cross join lateral pg_temp.notebook_at('2026-03-01 12:10:00+00'::timestamptz + g.i * interval '6.1 s') as p;
select is(
    (select count(*)::int from headroom as h where h.granted), 8,
    'batch takes 8: with the bot''s one, the window holds 9 of 10'
);
select results_eq(
    $$select h.granted, h.reason, h.retry_after_ms from headroom as h where h.i = 8$$,
    $$values (false, 'rpm'::text, 61000 - 8 * 6100)$$,
    'the last slot is kept for the bot: batch may go on when the oldest grant leaves'
);
select is(
    (select a.granted from public.acquire('minute', 1, 'NO_WAIT', 0, null, 'bot') as a), true,
    'a bot call arriving now takes the kept slot at once'
);

-- Fallback in time: big's one slot is taken; small is free.
set local "llm_limits.now" = '2026-03-01 12:20:00+00';
select is(
    (select a.granted from public.acquire('big', 1, 'NO_WAIT', 0, null, 'notebook') as a), true,
    'batch takes big''s minute'
);
create temp table first_call as
select * from public.acquire(
    'big', 1, 'WAIT', 30000, null, 'bot', 'b1', 'a23b0000-0000-4000-8000-000000000001'
);
select results_eq(
    $$select f.granted, f.reason, f.model, f.queue_position from first_call as f$$,
    $$values (false, 'queued'::text, 'big-it'::text, 1)$$,
    'the bot waits for big at first: it is next in line'
);
select ok(
    (select f.expected_wait_ms between 60000 and 61000 from first_call as f),
    'and is told its turn comes when big''s minute frees'
);
create temp table behind as
select * from public.acquire(
    'big', 1, 'WAIT', 30000, null, 'notebook', 'n1', 'a23b0000-0000-4000-8000-000000000002'
);
select results_eq(
    $$select b.reason, b.queue_position from behind as b$$,
    $$values ('queued'::text, 2)$$,
    'a batch waiter behind it is second in line'
);

set local "llm_limits.now" = '2026-03-01 12:20:02.5+00';
create temp table second_call as
select * from public.acquire(
    'big', 1, 'WAIT', 30000, null, 'bot', 'b1', 'a23b0000-0000-4000-8000-000000000001'
);
select results_eq(
    $$select s.granted, s.model, s.waited_ms, r.details #>> '{granted,fallback_from}', r.waited_ms
      from second_call as s
      inner join public.google_ai_reservations as r on r.id = s.reservation_id$$,
    $$values (true, 'small-it'::text, 2500, 'big'::text, 2500)$$,
    'after fallback_after_ms (2 s) the bot is served by small, which can grant now; '
    'the ledger says so and counts the whole wait'
);
select is(
    (select count(*)::int from google_ai_internal.wait_tickets as t
     where t.id = 'a23b0000-0000-4000-8000-000000000001'),
    0, 'and its place in big''s line is given up'
);
select is(
    (select a.reason from public.acquire(
        'big', 1, 'WAIT', 30000, null, 'notebook', 'n1', 'a23b0000-0000-4000-8000-000000000002'
    ) as a),
    'queued', 'a batch wait is not moved: batch may not fall back'
);

select * from finish();
rollback;

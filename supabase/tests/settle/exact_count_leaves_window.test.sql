-- A settlement whose estimate was Google's own count changes nothing in the
-- window's totals, and leaves the window row alone (no new row version: no
-- lock on the row every grant of the group needs); a settlement that moves
-- the count writes the row, and the totals follow it.
begin;
update google_ai_internal.clock_switch set steerable = true;
select plan(5);

set local "llm_limits.now" = '2026-03-01 12:00:00+00';
insert into public.google_ai_model_limits (model, api_model, rpm, tpm, rpd)
values ('m', 'm-api', 30, 15000, 14400);
insert into public.google_ai_api_keys (key_alias, env_var_name, quota_group)
values ('k1', 'TEST_KEY_1', 'proj-1');

create function pg_temp.window_row() returns table (version tid, requests bigint, tokens bigint)
language sql as $$
    select s.ctid, s.window_requests, s.window_tokens
    from public.google_ai_quota_state as s where s.quota_group = 'proj-1' and s.model = 'm'
$$;
create function pg_temp.settled(p_id uuid, p_prompt int) returns text language sql as $$
    select s.action from public.settle(p_id, 200, pg_catalog.jsonb_build_object(
        'usageMetadata', pg_catalog.jsonb_build_object(
            'promptTokenCount', p_prompt, 'candidatesTokenCount', 12
        )
    )) as s
$$;

create temp table grants as
select n.i, a.reservation_id as id
from generate_series(1, 2) as n (i)
cross join lateral public.acquire('m', 700, 'NO_WAIT', 0, null, 'bot', 'r' || n.i) as a;
create temp table before as select * from pg_temp.window_row();
select results_eq(
    $$select requests, tokens from before$$, $$values (2::bigint, 1400::bigint)$$,
    'two grants of 700 estimated tokens'
);

select is(pg_temp.settled((select g.id from grants as g where g.i = 1), 700), 'commit', 'Google counted 700, as estimated');
select results_eq(
    $$select * from pg_temp.window_row()$$, $$select * from before$$,
    'the window row is the same row version: not written, not locked'
);

select is(pg_temp.settled((select g.id from grants as g where g.i = 2), 650), 'commit', 'Google counted 650');
select results_eq(
    $$select version <> (select b.version from before as b), requests, tokens from pg_temp.window_row()$$,
    $$values (true, 2::bigint, 1350::bigint)$$,
    'a count that moved is written: 50 tokens back in the window'
);

select * from finish();
rollback;

-- A waiter's turn counts each grant once: the tickets a waiter saw ahead of
-- it are counted again in the snapshot the ledger is read in, so one of them
-- granted since the look (its ticket gone, its grant in the ledger) is a
-- used slot, not also a waiter still ahead. Counted twice, the waiter behind
-- was told its turn was a whole window away while a slot was free for it.
begin;
update google_ai_internal.clock_switch set steerable = true;
select plan(6);

set local "llm_limits.now" = '2026-03-01 12:00:00+00';
insert into public.google_ai_model_limits (model, api_model, rpm, tpm, rpd)
values ('m', 'm', 4, null, null);
insert into public.google_ai_api_keys (key_alias, env_var_name, quota_group)
values ('k1', 'TEST_KEY_1', 'proj-1');
select ok((select a.granted from public.acquire('m', 10, 'NO_WAIT', 0, null, 'old', 'x') as a), 'an earlier grant');

-- Two waiters ahead of ours, as its look at the line found them.
insert into google_ai_internal.wait_tickets (
    id, model, key_set, tokens, created_at, due_at, turn_at, alive_until, deadline
)
select
    w.id::uuid as id, 'm' as model, google_ai_internal.queue_key_set(null) as key_set,
    10 as tokens, now() as created_at, now() as due_at, now() as turn_at,
    now() + interval '1 h' as alive_until, now() + interval '1 h' as deadline
from (values ('a0000000-0000-4000-8000-00000000000a'), ('b0000000-0000-4000-8000-00000000000b')) as w (id);

create function pg_temp.turn() returns timestamptz language sql as $$
    select (google_ai_internal.turn_estimate(
        (select m from public.google_ai_model_limits as m where m.model = 'm'),
        array(select c from google_ai_internal.candidates('m', null, google_ai_internal.clock(), 10) as c),
        array['a0000000-0000-4000-8000-00000000000a', 'b0000000-0000-4000-8000-00000000000b']::uuid [],
        10, null::google_ai_internal.caller_policy, google_ai_internal.settings()
    )).turn
$$;

set local "llm_limits.now" = '2026-03-01 12:00:10+00';
select is(
    pg_temp.turn(), '2026-03-01 12:00:10+00'::timestamptz,
    'one grant in a window of four: room now for both ahead and for this waiter'
);

-- The second one ahead is granted after the look: its ticket goes, its grant is in the ledger.
select ok((select a.granted from public.acquire('m', 10, 'NO_WAIT', 0, null, 'b', 'b') as a), 'the second one ahead granted');
delete from google_ai_internal.wait_tickets where id = 'b0000000-0000-4000-8000-00000000000b';
select is(
    pg_temp.turn(), '2026-03-01 12:00:10+00'::timestamptz,
    'a waiter granted since the look counts once: a slot is still free for this one'
);

-- Both ahead granted: this waiter is next, on the last free slot.
select ok((select a.granted from public.acquire('m', 10, 'NO_WAIT', 0, null, 'a', 'a') as a), 'the first one granted');
delete from google_ai_internal.wait_tickets where id = 'a0000000-0000-4000-8000-00000000000a';
select is(
    pg_temp.turn(), '2026-03-01 12:00:10+00'::timestamptz,
    'with both served, the last slot is this waiter''s'
);

select * from finish();
rollback;

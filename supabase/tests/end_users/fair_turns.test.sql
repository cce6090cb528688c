-- Fair turns: in a WAIT queue the people of one class take turns
-- (line_ahead). One person's 20 queued tickets put another person's one
-- ticket behind one of theirs at most; the person served least recently
-- goes first; two people with several tickets alternate; tickets without an
-- end user keep ticket order, as before.
begin;
update google_ai_internal.clock_switch set steerable = true;
select plan(6);

set local "llm_limits.now" = '2026-03-01 12:00:00+00';
insert into public.google_ai_model_limits (model, api_model, rpm, tpm, rpd)
values ('m', 'm-api', 1, null, 10000);
insert into public.google_ai_api_keys (key_alias, env_var_name) values ('k1', 'TEST_KEY_1');
insert into public.google_ai_caller_policies (caller, caller_class) values ('bot', 'interactive');
-- The window's one slot is taken: everyone after this waits in line.
select is(
    (public.acquire('m', 10, 'NO_WAIT', 0, null, 'bot', null, null, 'tg:early')).granted, true,
    'the window is full'
);

-- Each WAIT's first call takes a place at the tail and answers 'queued'.
create function pg_temp.queue(p_who text, p_tickets integer, p_caller text default 'bot')
returns void
language plpgsql as $$
begin
    for i in 1 .. p_tickets loop
        perform public.acquire('m', 10, 'WAIT', 600000, null, p_caller,
                               p_who || '-' || i, null, p_who);
    end loop;
end;
$$;
-- Where each ticket stands: 1 + how many are ahead of it.
create function pg_temp.places()
returns table (request_id text, place integer)
language sql as $$
    select t.request_id, 1 + (google_ai_internal.line_ahead(
        t, '{}', google_ai_internal.clock(), interval '1 s', 60000
    )).ahead
    from google_ai_internal.wait_tickets as t
    where t.model = 'm'
    order by 2, t.seq
$$;

select pg_temp.queue('tg:flood', 20);
select pg_temp.queue('tg:other', 1);
select is(
    (select p.place from pg_temp.places() as p where p.request_id = 'tg:other-1'), 2,
    'behind a flood of 20 (nobody served yet), the other person is second: one slot'
);
select is(
    (select p.place from pg_temp.places() as p where p.request_id = 'tg:flood-20'), 21,
    'the flooder''s last ticket is last'
);

-- tg:early was served at 12:00:00; a newcomer never served goes before them.
select pg_temp.queue('tg:early', 1);
select pg_temp.queue('tg:new', 1);
select results_eq(
    $$select p.request_id from pg_temp.places() as p where p.place <= 4$$,
    $$values ('tg:flood-1'::text), ('tg:other-1'), ('tg:new-1'), ('tg:early-1')$$,
    'first turns: the people never served, in ticket order, then the one served at 12:00'
);

-- Two people with three tickets each alternate.
delete from google_ai_internal.wait_tickets where model = 'm';
select pg_temp.queue('tg:a', 3);
select pg_temp.queue('tg:b', 3);
select results_eq(
    $$select p.request_id from pg_temp.places() as p$$,
    $$values ('tg:a-1'::text), ('tg:b-1'), ('tg:a-2'), ('tg:b-2'), ('tg:a-3'), ('tg:b-3')$$,
    'two people take turns'
);

-- Without end users: ticket order, as before.
delete from google_ai_internal.wait_tickets where model = 'm';
select pg_temp.queue(null, 3, 'notebook');
select results_eq(
    $$select p.place from pg_temp.places() as p order by p.place$$,
    $$values (1), (2), (3)$$,
    'tickets without an end user keep ticket order'
);

select * from finish();
rollback;

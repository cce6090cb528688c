-- WAIT sleeps until capacity frees and is then granted. A 1 s window with no
-- guard keeps this fast. Real clock.
begin;
select plan(5);

-- The caller's one waiting rule: while the answer is 'queued', sleep
-- retry_after_ms and call again with the ticket it returned.
create function pg_temp.wait_for(p_model text, p_tokens integer, p_max_wait_ms integer)
returns public.acquire_result
language plpgsql as $$
declare
    answer public.acquire_result;
begin
    loop
        answer := public.acquire(
            p_model, p_tokens, 'WAIT', p_max_wait_ms, null, null, null, answer.ticket
        );
        exit when answer.reason is distinct from 'queued';
        perform pg_catalog.pg_sleep(answer.retry_after_ms / 1000.0);
    end loop;
    return answer;
end;
$$;


update public.google_ai_settings set window_ms = 1000, window_guard_ms = 0;
insert into public.google_ai_model_limits (model, api_model, rpm, tpm, rpd)
values ('test-model', 'test-model', 1, null, null);
insert into public.google_ai_api_keys (key_alias, env_var_name, quota_group)
values ('k1', 'TEST_KEY_1', 'proj-1');

create temp table r_first as select * from public.acquire('test-model', 0);
select is((select r.granted from r_first as r), true, 'the one request of the 1 s window');
create temp table r_wait as select * from pg_temp.wait_for('test-model', 0, 5000);
select is((select r.granted from r_wait as r), true, 'WAIT is granted once the first grant leaves the window');
select cmp_ok((select r.waited_ms from r_wait as r), '>', 0, 'waited_ms > 0');
select cmp_ok((select r.waited_ms from r_wait as r), '<', 3000, 'the wait ended soon after the window freed');
select cmp_ok(
    (select extract(epoch from max(r.granted_at) - min(r.granted_at))::numeric
     from public.google_ai_reservations as r where r.model = 'test-model'),
    '>=', 1.0::numeric,
    'the two grants are a full window apart: waiting never over-commits'
);

select * from finish();
rollback;

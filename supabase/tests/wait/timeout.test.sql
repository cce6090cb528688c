-- WAIT on a window that stays full gives up after max_wait_ms with reason
-- wait_timeout. Real clock: llm_limits.now is not frozen here.
begin;
-- Steering llm_limits.now/clock_skew needs the owner-only switch (rolled back with the test).
update google_ai_internal.clock_switch set steerable = true;
select plan(6);

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


insert into public.google_ai_model_limits (model, api_model, rpm, tpm, rpd)
values ('test-model', 'test-model', 1, null, null);
insert into public.google_ai_api_keys (key_alias, env_var_name, quota_group)
values ('k1', 'TEST_KEY_1', 'proj-1');

select is((select a.granted from public.acquire('test-model', 0) as a), true, 'the one request of the minute');

create temp table r_wait as select * from pg_temp.wait_for('test-model', 0, 300);
select is((select r.granted from r_wait as r), false, 'WAIT 300 ms on a full minute: refused');
select is((select r.reason from r_wait as r), 'wait_timeout', 'reason wait_timeout');
select cmp_ok((select r.waited_ms from r_wait as r), '>=', 300, 'it waited the whole 300 ms');
select cmp_ok((select r.waited_ms from r_wait as r), '<', 1500, 'and not much longer');
select results_eq(
    $$select a.details ->> 'reason', a.details ->> 'mode', (a.details ->> 'max_wait_ms')::int,
             (a.details ->> 'waited_ms')::int >= 300
      from public.google_ai_audit_log as a where a.model = 'test-model' and a.event = 'refused'$$,
    $$values ('wait_timeout'::text, 'WAIT'::text, 300, true)$$,
    'one refused audit row records the wait'
);

select * from finish();
rollback;

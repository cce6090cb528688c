-- Caller classes and daily budgets: a caller no policy names is `default`; a
-- login pinned to a caller is that caller whatever it passes; a caller capped
-- at N requests a day gets caller_budget after N, with the time to Pacific
-- midnight, and nobody else is affected.
begin;
update google_ai_internal.clock_switch set steerable = true;
select plan(12);

set local "llm_limits.now" = '2026-03-01 12:00:00+00';  -- 04:00 in Los Angeles
insert into public.google_ai_model_limits (model, api_model, rpm, tpm, rpd)
values ('m', 'm-api', 100, null, 1000);
insert into public.google_ai_api_keys (key_alias, env_var_name, quota_group)
values ('k1', 'TEST_KEY_1', 'proj-1');

select is(
    (select p.caller_class from google_ai_internal.caller_policy('nobody') as p), 'default',
    'a caller no policy names is in class default'
);
insert into public.google_ai_caller_policies (caller, caller_class) values
('telegram-bot', 'interactive'), ('festival-parser', 'batch');
select results_eq(
    $$select p.caller_class, p.priority, p.may_fall_back
      from google_ai_internal.caller_policy('telegram-bot') as p$$,
    $$values ('interactive'::text, 10, true)$$,
    'the bot is interactive: first, and may fall back'
);
create temp table parsed as
select * from public.acquire('m', 10, 'NO_WAIT', 0, null, 'festival-parser');
select is(
    (select r.caller_class from public.google_ai_reservations as r
     where r.id = (select p.reservation_id from parsed as p)),
    'batch', 'the ledger records the grant''s class'
);

-- A login pinned to a caller cannot pass for another.
create role llm_limits_pin_test login;
grant service_role to llm_limits_pin_test;
update public.google_ai_caller_policies set login_role = 'llm_limits_pin_test'
where caller = 'festival-parser';
set local session authorization llm_limits_pin_test;
create temp table pinned as
select * from public.acquire('m', 10, 'NO_WAIT', 0, null, 'telegram-bot');
reset session authorization;
select results_eq(
    $$select r.caller, r.caller_class from public.google_ai_reservations as r
      where r.id = (select p.reservation_id from pinned as p)$$,
    $$values ('festival-parser'::text, 'batch'::text)$$,
    'a pinned login is its caller, whatever name it passes'
);

-- A budget of 3 requests a day.
insert into public.google_ai_caller_budgets (caller, model, requests) values ('notebook-7', 'm', 3);
-- notebook-7 (default) is paced below the bot's class: one call a second.
create function pg_temp.grant_at(p_at timestamptz) returns boolean
language plpgsql as $$
begin
    perform set_config('llm_limits.now', p_at::text, true);
    return (public.acquire('m', 10, 'NO_WAIT', 0, null, 'notebook-7')).granted;
end;
$$;
select is(
    (select count(*)::int from generate_series(1, 3) as i
     where pg_temp.grant_at('2026-03-01 12:00:00+00'::timestamptz + i * interval '1 s')),
    3, 'three grants fit the budget'
);
set local "llm_limits.now" = '2026-03-01 12:00:04+00';
create temp table over as select * from public.acquire('m', 10, 'NO_WAIT', 0, null, 'notebook-7');
select results_eq(
    $$select o.granted, o.reason, o.retry_after_ms from over as o$$,
    $$values (false, 'caller_budget'::text, 20 * 3600 * 1000 - 4000)$$,
    'the fourth is refused caller_budget until Pacific midnight (20 h less 4 s away)'
);
select is(
    (select a.reason from public.acquire('m', 10, 'WAIT', 5000, null, 'notebook-7') as a),
    'caller_budget', 'a WAIT is refused at once: only a new day frees a budget'
);
select is(
    (select a.granted from public.acquire('m', 10, 'NO_WAIT', 0, null, 'telegram-bot') as a),
    true, 'another caller is unaffected'
);
select is(
    (select a.details ->> 'reason' from public.google_ai_audit_log as a
     where a.event = 'refused' and a.details ->> 'caller' = 'notebook-7' order by a.ts limit 1),
    'caller_budget', 'the refusal is audited'
);
select results_eq(
    $$select u.requests, u.input_tokens::int from public.google_ai_caller_usage as u
      where u.caller = 'notebook-7'$$,
    $$values (3, 30)$$, 'usage counts grants and their estimated tokens'
);
-- A tokens budget, and the next day.
insert into public.google_ai_caller_budgets (caller, model, input_tokens) values ('etl', 'm', 100);
select is(
    (select a.reason from public.acquire('m', 101, 'NO_WAIT', 0, null, 'etl') as a),
    'caller_budget', 'a request above the token budget is refused'
);
set local "llm_limits.now" = '2026-03-02 08:00:01+00';  -- just past midnight in Los Angeles
select is(
    (select a.granted from public.acquire('m', 10, 'NO_WAIT', 0, null, 'notebook-7') as a),
    true, 'a new Pacific day brings the budget back'
);

select * from finish();
rollback;

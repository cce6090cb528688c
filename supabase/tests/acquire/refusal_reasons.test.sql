-- A refusal says which limit binds and, truthfully, when to retry: rpm and
-- tpm from the ledger rows that must leave the window, rpd at the next
-- Pacific midnight, cooldown when Google said 429.
begin;
-- Steering llm_limits.now/clock_skew needs the owner-only switch (rolled back with the test).
update google_ai_internal.clock_switch set steerable = true;
select plan(26);

set local "llm_limits.now" = '2026-03-01 12:00:00+00';
insert into public.google_ai_model_limits (model, api_model, rpm, tpm, rpd) values
('m-rpm', 'm-rpm', 2, null, null),
('m-tpm', 'm-tpm', null, 1000, null),
('m-rpd', 'm-rpd', null, null, 2),
('m-both', 'm-both', 1, null, 1),
('m-cool', 'm-cool', 10, null, null);
insert into public.google_ai_api_keys (key_alias, env_var_name, quota_group)
values ('k1', 'TEST_KEY_1', 'proj-1');

-- acquire returns the API id, which is the model name for these models.
create temp table grants (model text, granted boolean, reservation_id uuid);
insert into grants select a.model, a.granted, a.reservation_id from public.acquire('m-rpm', 0) as a;
insert into grants select a.model, a.granted, a.reservation_id from public.acquire('m-tpm', 400) as a;
insert into grants select a.model, a.granted, a.reservation_id from public.acquire('m-rpd', 0) as a;
insert into grants select a.model, a.granted, a.reservation_id from public.acquire('m-both', 0) as a;
insert into grants select a.model, a.granted, a.reservation_id from public.acquire('m-cool', 0) as a;

set local "llm_limits.now" = '2026-03-01 12:00:10+00';
insert into grants select a.model, a.granted, a.reservation_id from public.acquire('m-rpm', 0) as a;
insert into grants select a.model, a.granted, a.reservation_id from public.acquire('m-tpm', 400) as a;
select is(
    (select count(*)::int from grants where granted), 7, 'setup: seven grants at 12:00:00 and 12:00:10'
);

-- rpm: two grants in the window; the one at 12:00:00 leaves at 12:01:01.
set local "llm_limits.now" = '2026-03-01 12:00:20+00';
create temp table r_rpm as select * from public.acquire('m-rpm', 0);
select is((select r.granted from r_rpm as r), false, 'rpm: third request in the window is refused');
select is((select r.reason from r_rpm as r), 'rpm', 'rpm: reason is rpm');
select is((select r.retry_after_ms from r_rpm as r), 41000, 'rpm: retry when the oldest grant leaves');
select is((select r.reservation_id from r_rpm as r), null, 'rpm: a refusal carries no reservation');
select is((select r.key_alias from r_rpm as r), 'k1', 'rpm: the refusal names the key it tried');

-- tpm: 400 + 400 are in the window, TPM 1000.
create temp table r_tpm_300 as select * from public.acquire('m-tpm', 300);
select is((select r.reason from r_tpm_300 as r), 'tpm', 'tpm: 800 + 300 > 1000 is refused for tpm');
select is(
    (select r.retry_after_ms from r_tpm_300 as r), 41000,
    'tpm: 300 tokens fit once the first 400 leave (12:01:01)'
);
create temp table r_tpm_700 as select * from public.acquire('m-tpm', 700);
select is(
    (select r.retry_after_ms from r_tpm_700 as r), 51000,
    'tpm: 700 tokens need both grants gone (12:01:11): the sum of tokens decides'
);
select is(
    (select a.granted from public.acquire('m-tpm', 200) as a), true,
    'tpm: 200 tokens fill the TPM exactly and are granted'
);
select is(
    (select a.granted from public.acquire('m-tpm', 0) as a), true,
    'tpm: a 0-token request still fits a full TPM'
);
select is(
    (select a.reason from public.acquire('m-tpm', 1) as a), 'tpm', 'tpm: one more token does not'
);

-- rpd: two grants today (Pacific); the day ends at 2026-03-02 08:00Z.
set local "llm_limits.now" = '2026-03-01 12:10:00+00';
insert into grants select a.model, a.granted, a.reservation_id from public.acquire('m-rpd', 0) as a;
create temp table r_rpd as select * from public.acquire('m-rpd', 0);
select is((select r.reason from r_rpd as r), 'rpd', 'rpd: third request of the day is refused for rpd');
select is(
    (select r.retry_after_ms from r_rpd as r), 71400000,
    'rpd: retry at the next midnight America/Los_Angeles (19 h 50 min away)'
);

-- Both rpm and rpd bind: the later one is when a retry can succeed.
create temp table r_both as select * from public.acquire('m-both', 0);
select is((select r.reason from r_both as r), 'rpd', 'rpm and rpd both bind: the later (rpd) is reported');
select is(
    (select r.retry_after_ms from r_both as r), 71400000,
    'and retry_after_ms is when both have freed'
);

-- cooldown: Google said 429 with retryDelay 30 s.
select is(
    (select s.action from public.settle(
        (select g.reservation_id from grants as g where g.model = 'm-cool'), 429,
        '{"error": {"code": 429, "details": [
          {"@type": "type.googleapis.com/google.rpc.QuotaFailure", "violations": [
            {"quotaId": "GenerateRequestsPerMinutePerProjectPerModel-FreeTier"}]},
          {"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": "30s"}]}}'
    ) as s),
    'rate_limited', 'cooldown: setup, Google said 429'
);
select is(
    (select s.cooldown_until from public.google_ai_quota_state as s
     where s.quota_group = 'proj-1' and s.model = 'm-cool'),
    '2026-03-01 12:10:30+00'::timestamptz,
    'cooldown: until now + the retryDelay'
);
create temp table r_cool as select * from public.acquire('m-cool', 0);
select is((select r.granted from r_cool as r), false, 'cooldown: refused though rpm has room');
select is((select r.reason from r_cool as r), 'cooldown', 'cooldown: reason is cooldown');
select is((select r.retry_after_ms from r_cool as r), 30000, 'cooldown: retry after the retryDelay');

-- The day turns at Pacific midnight, not earlier.
set local "llm_limits.now" = '2026-03-02 07:59:59.999+00';
select is(
    (select a.reason from public.acquire('m-rpd', 0) as a), 'rpd',
    'rpd: still refused 1 ms before Pacific midnight'
);
select is(
    (select a.retry_after_ms from public.acquire('m-rpd', 0) as a), 1,
    'rpd: retry_after_ms is at least 1'
);
set local "llm_limits.now" = '2026-03-02 08:00:00+00';
select is(
    (select a.granted from public.acquire('m-rpd', 0) as a), true, 'rpd: granted at Pacific midnight'
);
select is(
    (select a.granted from public.acquire('m-cool', 0) as a), true, 'cooldown: granted after it ends'
);
select results_eq(
    $$select a.details ->> 'reason', sum(coalesce((a.details ->> 'count')::int, 1))::int
      from public.google_ai_audit_log as a
      where a.event = 'refused' and a.model like 'm-%' group by 1 order by 1$$,
    $$values ('cooldown', 1), ('rpd', 4), ('rpm', 1), ('tpm', 3)$$,
    'every refusal is audited with its reason'
);

select * from finish();
rollback;

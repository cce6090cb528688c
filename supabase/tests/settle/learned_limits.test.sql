-- Learned limits fix themselves by default: with learn_limits = 'apply' (the
-- default) the first 429 whose quotaValue is below the configured limit lowers
-- the quota group's limit, audited as limit_observed (applied) and as a config
-- change, and acquire keeps to it from then on; a higher quotaValue never
-- raises a limit, and a value the table already holds is not observed again.
begin;
update google_ai_internal.clock_switch set steerable = true;
select plan(12);

set local "llm_limits.now" = '2026-03-01 12:00:00+00';
insert into public.google_ai_model_limits (model, api_model, rpm, tpm, rpd)
values ('m', 'm-api', 10, 20000, 1000);
insert into public.google_ai_api_keys (key_alias, env_var_name, quota_group) values
('k1', 'TEST_KEY_1', 'proj-1'),
('k2', 'TEST_KEY_2', 'proj-2');

create function pg_temp.grant_on(p_key text, p_tokens int default 4000) returns uuid language sql as $$
    select a.reservation_id from public.acquire('m', p_tokens, 'NO_WAIT', 0, array[p_key]) as a
$$;
create function pg_temp.tpm_429(p_id uuid, p_value text) returns text language sql as $$
    select s.action from public.settle(p_id, 429, pg_catalog.jsonb_build_object('error', pg_catalog.jsonb_build_object(
        'code', 429, 'details', pg_catalog.jsonb_build_array(
            pg_catalog.jsonb_build_object('@type', 'type.googleapis.com/google.rpc.QuotaFailure',
                'violations', pg_catalog.jsonb_build_array(pg_catalog.jsonb_build_object(
                    'quotaId', 'GenerateContentInputTokensPerModelPerMinute-FreeTier',
                    'quotaValue', p_value))),
            pg_catalog.jsonb_build_object('@type', 'type.googleapis.com/google.rpc.RetryInfo',
                'retryDelay', '1s'))))) as s
$$;

select is(
    (select s.learn_limits from public.google_ai_settings as s), 'apply',
    'learn_limits is apply by default'
);

-- Four grants of 4,000 tokens fit the configured 20,000; Google's real TPM is 15,000.
create temp table grants as select i, pg_temp.grant_on('k1') as id from generate_series(1, 4) as i;
create temp table mark as select coalesce(max(a.id), 0) as last_id from public.google_ai_audit_records as a;
select is(pg_temp.tpm_429((select g.id from grants as g where g.i = 4), '15000'), 'rate_limited', 'Google answers 429 at its 15,000');
select results_eq(
    $$select g.rpm, g.tpm, g.rpd from public.google_ai_group_limits as g where g.quota_group = 'proj-1' and g.model = 'm'$$,
    $$values (null::int, 15000, null::int)$$,
    'the group''s TPM is lowered to what Google enforces'
);
select results_eq(
    $$select a.details ->> 'dimension', (a.details ->> 'observed')::int, (a.details ->> 'configured')::int,
             (a.details ->> 'applied')::boolean, a.details ->> 'learn_limits'
      from public.google_ai_audit_records as a
      where a.event = 'limit_observed' and a.id > (select m.last_id from mark as m)$$,
    $$values ('tpm'::text, 15000, 20000, true, 'apply'::text)$$,
    'audited as limit_observed, applied'
);
select results_eq(
    $$select a.details -> 'old' ->> 'tpm', a.details -> 'new' ->> 'tpm'
      from public.google_ai_audit_records as a
      where a.event = 'config_changed' and a.details ->> 'table' = 'google_ai_group_limits'
        and a.id > (select m.last_id from mark as m)$$,
    $$values (null::text, '15000'::text)$$,
    'and as a config change of the group''s limits'
);
select results_eq(
    $$select o.quota_group, o.dimension, o.observed, o.configured, o.applied from public.observed_limits() as o$$,
    $$values ('proj-1'::text, 'tpm'::text, 15000, 15000, true)$$,
    'observed_limits (llm-limits status) shows it applied'
);
select results_eq(
    $$select q.tpm_limit from public.quota_status() as q where q.quota_group = 'proj-1' and q.model = 'm'$$,
    $$values (15000)$$, 'quota_status shows the lowered limit'
);
select results_eq(
    $$select q.tpm_limit from public.quota_status() as q where q.quota_group = 'proj-2' and q.model = 'm'$$,
    $$values (20000)$$, 'another quota group keeps the configured one'
);

-- After the cooldown acquire keeps to 15,000: 16,000 counted, nothing more fits.
set local "llm_limits.now" = '2026-03-01 12:00:02+00';
select is(
    (select a.reason from public.acquire('m', 1, 'NO_WAIT', 0, array['k1']) as a), 'tpm',
    'acquire refuses above the learned limit'
);

-- A higher value (another tier?) never raises it; the same value is news to nobody.
select pg_temp.tpm_429(pg_temp.grant_on('k2', 100), '30000');
select is(
    (select g.tpm from public.google_ai_group_limits as g where g.quota_group = 'proj-2' and g.model = 'm'),
    null, 'a quotaValue above the limit is not applied'
);
create temp table before_same as select count(*)::int as n from public.google_ai_audit_records as a where a.event = 'limit_observed';
set local "llm_limits.now" = '2026-03-01 12:01:10+00';
select pg_temp.tpm_429(pg_temp.grant_on('k1', 100), '15000');
select is(
    (select count(*)::int from public.google_ai_audit_records as a where a.event = 'limit_observed')
    - (select b.n from before_same as b),
    0, 'a quotaValue the table holds is not observed again'
);
select throws_ok(
    $$update public.google_ai_settings set learn_limits = 'always'$$, '23514', null,
    'learn_limits takes off, suggest or apply'
);

select * from finish();
rollback;

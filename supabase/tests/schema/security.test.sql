-- Nothing of ours is reachable through PostgREST's API roles: RLS is on for
-- every table, anon and authenticated hold no privilege on any table,
-- sequence or function, and only service_role may call the RPCs. Every
-- function pins an empty search_path.
begin;
select plan(21);

-- Our relations: everything in public and google_ai_internal that no
-- extension owns.
create temp view our_relations as
select c.oid, c.relname, c.relkind, c.relrowsecurity
from pg_catalog.pg_class as c
where
    c.relnamespace in ('public'::regnamespace, 'google_ai_internal'::regnamespace)
    and c.relkind in ('r', 'p', 'v', 'm', 'S')
    and not exists (
        select from pg_catalog.pg_depend as d
        where d.classid = 'pg_class'::regclass and d.objid = c.oid and d.deptype = 'e'
    );

create temp view our_functions as
select p.oid, p.proname, p.pronamespace::regnamespace::text as schema_name, p.proconfig
from pg_catalog.pg_proc as p
where
    p.pronamespace in ('public'::regnamespace, 'google_ai_internal'::regnamespace)
    and not exists (
        select from pg_catalog.pg_depend as d
        where d.classid = 'pg_proc'::regclass and d.objid = p.oid and d.deptype = 'e'
    );

create temp view api_roles as
select r.rolname from (values ('anon'), ('authenticated')) as r (rolname);

select is(
    (select count(*)::int from our_relations
     where relkind = 'r' and relname in (
         'google_ai_api_keys', 'google_ai_model_limits', 'google_ai_usage_counters', 'token_usage',
         'google_ai_maintenance_log', 'google_ai_settings', 'google_ai_group_limits',
         'google_ai_reservations', 'google_ai_quota_state', 'google_ai_audit_records',
         'google_ai_refusals', 'google_ai_event_counts', 'clock_switch'
     )),
    13, 'the checks below cover the thirteen tables of llm-limits'
);
select is_empty(
    $$select relname from our_relations where relkind in ('r', 'p') and not relrowsecurity$$,
    'RLS is enabled on every table of ours'
);
select is_empty(
    $$select o.relname, a.rolname from our_relations as o cross join api_roles as a
      where o.relkind <> 'S' and (
          pg_catalog.has_table_privilege(
              a.rolname, o.oid, 'select, insert, update, delete, truncate, references, trigger')
          or pg_catalog.has_any_column_privilege(a.rolname, o.oid, 'select, insert, update, references')
      )$$,
    'anon and authenticated have no privilege on any table of ours'
);
select is_empty(
    $$select o.relname, a.rolname from our_relations as o cross join api_roles as a
      where o.relkind = 'S'
        and pg_catalog.has_sequence_privilege(a.rolname, o.oid, 'usage, select, update')$$,
    'anon and authenticated have no privilege on any sequence of ours'
);
select cmp_ok(
    (select count(*)::int from our_relations where relkind = 'S'), '>=', 6,
    'the six identity sequences are all checked'
);
select is_empty(
    $$select f.schema_name, f.proname, a.rolname from our_functions as f cross join api_roles as a
      where pg_catalog.has_function_privilege(a.rolname, f.oid, 'execute')$$,
    'anon and authenticated cannot execute any function of ours'
);
select ok(
    (select count(*) from our_functions where schema_name = 'google_ai_internal') >= 10
    and (select count(*) from our_functions where schema_name = 'public') >= 5,
    'the function checks cover both schemas'
);
select ok(
    not pg_catalog.has_schema_privilege('anon', 'google_ai_internal', 'usage')
    and not pg_catalog.has_schema_privilege('authenticated', 'google_ai_internal', 'usage'),
    'the API roles cannot even look into google_ai_internal'
);
select is_empty(
    $$select f.schema_name, f.proname, f.proconfig from our_functions as f
      where f.proconfig is null or not ('search_path=""' = any(f.proconfig))$$,
    'every function of ours pins search_path to ""'
);

select ok(
    pg_catalog.has_function_privilege(
        'service_role', 'public.acquire(text, integer, text, integer, text[], text, text, uuid, text)', 'execute'
    ),
    'service_role can execute acquire'
);
select ok(
    pg_catalog.has_function_privilege('service_role', 'public.settle(uuid, integer, jsonb, text)', 'execute'),
    'service_role can execute settle'
);
select is_empty(
    $$select s.signature from (values
        ('public.commit_usage(uuid, integer, integer, jsonb)'),
        ('public.release(uuid, text, boolean)'),
        ('public.report_rate_limit(uuid, text, integer)')
      ) as s (signature)
      where pg_catalog.to_regprocedure(s.signature) is not null$$,
    'settle is the one way to settle: the RPCs of clients before it are gone'
);
select is_empty(
    $$select p.oid::regprocedure from pg_catalog.pg_proc as p
      where p.pronamespace = 'google_ai_internal'::regnamespace
        and p.proname in ('commit_reservation', 'record_token_usage', 'release_reservation',
                          'record_rate_limit')
        and pg_catalog.has_function_privilege('service_role', p.oid, 'execute')$$,
    'settle''s steps are internal: service_role cannot call them'
);
select ok(
    pg_catalog.has_function_privilege('service_role', 'public.disable_key(text, text)', 'execute'),
    'service_role can execute disable_key'
);
select ok(
    pg_catalog.has_function_privilege('service_role', 'public.enable_key(text, text)', 'execute'),
    'service_role can execute enable_key'
);
select ok(
    pg_catalog.has_function_privilege('service_role', 'public.audit_event_kinds()', 'execute'),
    'service_role can execute audit_event_kinds'
);
select ok(
    pg_catalog.has_function_privilege('service_role', 'public.resolve_model(text)', 'execute'),
    'service_role can execute resolve_model'
);
-- 20261124000200 grants service_role only SELECT on these three tables.
select is_empty(
    $$select t.name, p.priv from
      (values ('public.google_ai_reservations'), ('public.google_ai_quota_state'),
              ('public.google_ai_audit_log')) as t (name)
      cross join (values ('insert'), ('update'), ('delete'), ('truncate')) as p (priv)
      where pg_catalog.has_table_privilege('service_role', t.name, p.priv)$$,
    'service_role only reads the ledger, the window state and the audit log: the RPCs write them'
);
select ok(
    not pg_catalog.has_table_privilege('service_role', 'public.google_ai_audit_log', 'truncate'),
    'service_role cannot TRUNCATE the append-only audit log (TRUNCATE skips the row trigger)'
);

-- The privileges hold in practice, not just in the catalog.
insert into public.google_ai_model_limits (model, api_model, rpm, tpm, rpd)
values ('test-model', 'test-model-api', 5, 1000, 100);
insert into public.google_ai_api_keys (key_alias, env_var_name, quota_group)
values ('k1', 'TEST_KEY_1', 'proj-1');

set local role anon;
select throws_ok(
    $$select public.acquire('test-model', 10)$$, '42501', null, 'anon is refused EXECUTE on acquire'
);
set local role service_role;
select is(
    (select a.key_alias from public.acquire('test-model', 10) as a), 'k1',
    'service_role gets a grant through the SECURITY DEFINER RPC, with no table privilege of its own'
);
reset role;

select * from finish();
rollback;

-- Optional: dedicated least-privilege login roles, each allowed to EXECUTE
-- only the RPCs it calls, and nothing else: no table, view or sequence
-- privilege, no schema but what PUBLIC has, and no run_maintenance() (pg_cron
-- or an operator runs that as the owner; a caller that could run it could
-- also trim the audit log on demand). The RPCs are SECURITY DEFINER, so
-- EXECUTE is all a caller needs.
--
--   llm_limits_client   the bot and the notebooks (the Python client,
--                       client/llm_limits/db.py): pool_keys, token_counter,
--                       acquire, settle; and the batch runner's
--                       batch_outlook and request_outcomes
--   llm_limits_gateway  the llm-gateway Edge Function (LLM_GATEWAY_DB_URL,
--                       supabase/functions/llm-gateway/db.ts):
--                       identify_caller, pool_keys, acquire, settle
--
-- The operator's RPCs (disable_key, enable_key, quota_status, the CLI's
-- reports, run_maintenance) stay with service_role and the owner: settle
-- disables a key Google refuses, so no carrier calls disable_key itself.
--
-- Plain SQL, no psql meta-commands: the Supabase CLI applies this file as its
-- custom roles file (`supabase db push --include-roles`). Idempotent: every
-- run converges each role to exactly its grants.
--
-- Order: the grants need the functions, so run it AFTER the migrations:
--     supabase db push --remote="$URL" --yes
--     psql "$URL" -v ON_ERROR_STOP=1 -f supabase/roles.sql
-- (`db push --include-roles` applies this file BEFORE pending migrations, so
-- on a first deploy it creates the roles without grants; the next push with
-- --include-roles, or the psql line above, completes them.)
--
-- Passwords: never in this file. Either
--   * set one afterwards, hashed client-side by psql (nothing in plain text
--     reaches the server or its logs):
--         psql "$URL" -c '\password llm_limits_client'
--   * or pass it for this run only, as a setting the DO block reads
--     (llm_limits.client_password, llm_limits.gateway_password):
--         PGOPTIONS="-c llm_limits.client_password=$PW" psql "$URL" -f supabase/roles.sql
--     (the ALTER ROLE runs inside the DO block, so statement logging records
--     only the block's text, never the password).
-- Without either, a role exists but cannot log in with a password.
-- Connect as: postgresql://llm_limits_client:<password>@<host>:5432/postgres

do $$
declare
    r record;
begin
    for r in
        select *
        from (
            values
            ('llm_limits_client', 'llm_limits.client_password'),
            ('llm_limits_gateway', 'llm_limits.gateway_password')
        ) as v (role_name, password_setting)
    loop
        -- NOINHERIT: even if someone later grants it a role, it does not
        -- silently gain that role's privileges. Roles are cluster-wide: two
        -- databases of one cluster may run this file at once, so a role is
        -- created unless it exists by then, and altered only when it differs
        -- (two ALTER ROLEs of one role at once fail "tuple concurrently updated").
        if not exists (select from pg_catalog.pg_roles where rolname = r.role_name) then
            begin
                execute pg_catalog.format('create role %I login noinherit', r.role_name);
            exception when duplicate_object or unique_violation then
                null;  -- created meanwhile by a run in another database
            end;
        end if;
        if exists (
            select from pg_catalog.pg_roles
            where rolname = r.role_name and (not rolcanlogin or rolinherit)
        ) then
            execute pg_catalog.format('alter role %I login noinherit', r.role_name);
        end if;
        if coalesce(pg_catalog.current_setting(r.password_setting, true), '') <> '' then
            execute pg_catalog.format(
                'alter role %I password %L',
                r.role_name, pg_catalog.current_setting(r.password_setting)
            );
        end if;
    end loop;
end
$$;

-- Converge: take back anything granted to the roles directly on our objects,
-- then grant each role its RPCs that exist (all of them once the migrations
-- ran).
do $$
declare
    grantee text;
    obj record;
begin
    foreach grantee in array array['llm_limits_client', 'llm_limits_gateway'] loop
        for obj in
            select pg_catalog.format('%I.%I', n.nspname, c.relname) as name,
                   case when c.relkind = 'S' then 'sequence' else 'table' end as kind
            from pg_catalog.pg_class as c
            inner join pg_catalog.pg_namespace as n on c.relnamespace = n.oid
            where n.nspname in ('public', 'google_ai_internal')
              and c.relkind in ('r', 'p', 'v', 'm', 'f', 'S')
        loop
            execute pg_catalog.format(
                'revoke all on %s %s from %I', obj.kind, obj.name, grantee
            );
        end loop;
        for obj in
            select p.oid::regprocedure as name
            from pg_catalog.pg_proc as p
            inner join pg_catalog.pg_namespace as n on p.pronamespace = n.oid
            where n.nspname in ('public', 'google_ai_internal')
        loop
            execute pg_catalog.format('revoke all on function %s from %I', obj.name, grantee);
        end loop;
        if pg_catalog.to_regnamespace('google_ai_internal') is not null then
            execute pg_catalog.format('revoke all on schema google_ai_internal from %I', grantee);
        end if;
    end loop;

    for obj in
        select s.role_name, s.signature::regprocedure as name
        from (
            values
            ('llm_limits_client', 'public.pool_keys()'),
            ('llm_limits_client', 'public.token_counter(text)'),
            ('llm_limits_client',
             'public.acquire(text, integer, text, integer, text[], text, text, uuid, text)'),
            ('llm_limits_client', 'public.settle(uuid, integer, jsonb, text)'),
            ('llm_limits_client', 'public.batch_outlook(text, text[], text)'),
            ('llm_limits_client', 'public.request_outcomes(text[])'),
            ('llm_limits_gateway', 'public.identify_caller(bytea, text)'),
            ('llm_limits_gateway', 'public.pool_keys()'),
            ('llm_limits_gateway',
             'public.acquire(text, integer, text, integer, text[], text, text, uuid, text)'),
            ('llm_limits_gateway', 'public.settle(uuid, integer, jsonb, text)')
        ) as s (role_name, signature)
        where pg_catalog.to_regprocedure(s.signature) is not null
    loop
        execute pg_catalog.format(
            'grant execute on function %s to %I', obj.name, obj.role_name
        );
    end loop;
end
$$;

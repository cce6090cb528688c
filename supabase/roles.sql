-- Optional: a dedicated least-privilege login role for the bot and the
-- notebooks, `llm_limits_client`. It may EXECUTE the nine client RPCs
-- (acquire, commit_usage, release, report_rate_limit, disable_key,
-- quota_status, token_counter, and the batch runner's batch_outlook and
-- request_outcomes) and nothing else: no table, view or sequence privilege, no
-- schema but what PUBLIC has, and no run_maintenance() (pg_cron or an
-- operator runs that as the owner; a client that could run it could also
-- trim the audit log on demand). The RPCs are SECURITY DEFINER, so EXECUTE
-- is all a caller needs.
--
-- Plain SQL, no psql meta-commands: the Supabase CLI applies this file as its
-- custom roles file (`supabase db push --include-roles`). Idempotent: every
-- run converges the role to exactly these grants.
--
-- Order: the grants need the functions, so run it AFTER the migrations:
--     supabase db push --remote="$URL" --yes
--     psql "$URL" -v ON_ERROR_STOP=1 -f supabase/roles.sql
-- (`db push --include-roles` applies this file BEFORE pending migrations, so
-- on a first deploy it creates the role without grants; the next push with
-- --include-roles, or the psql line above, completes them.)
--
-- Password: never in this file. Either
--   * set it afterwards, hashed client-side by psql (nothing in plain text
--     reaches the server or its logs):
--         psql "$URL" -c '\password llm_limits_client'
--   * or pass it for this run only, as a setting the DO block reads:
--         PGOPTIONS="-c llm_limits.client_password=$PW" psql "$URL" -f supabase/roles.sql
--     (the ALTER ROLE runs inside the DO block, so statement logging records
--     only the block's text, never the password).
-- Without either, the role exists but cannot log in with a password.
-- Connect as: postgresql://llm_limits_client:<password>@<host>:5432/postgres

do $$
begin
    if not exists (select from pg_catalog.pg_roles where rolname = 'llm_limits_client') then
        -- NOINHERIT: even if someone later grants it a role, it does not
        -- silently gain that role's privileges.
        create role llm_limits_client login noinherit;
    else
        alter role llm_limits_client login noinherit;
    end if;
    if coalesce(pg_catalog.current_setting('llm_limits.client_password', true), '') <> '' then
        execute pg_catalog.format(
            'alter role llm_limits_client password %L',
            pg_catalog.current_setting('llm_limits.client_password')
        );
    end if;
end
$$;

-- Converge: take back anything granted to the role directly on our objects,
-- then grant the nine RPCs that exist (all of them once the migrations ran).
do $$
declare
    obj record;
begin
    for obj in
        select pg_catalog.format('%I.%I', n.nspname, c.relname) as name,
               case when c.relkind = 'S' then 'sequence' else 'table' end as kind
        from pg_catalog.pg_class as c
        inner join pg_catalog.pg_namespace as n on c.relnamespace = n.oid
        where n.nspname in ('public', 'google_ai_internal')
          and c.relkind in ('r', 'p', 'v', 'm', 'f', 'S')
    loop
        execute pg_catalog.format(
            'revoke all on %s %s from llm_limits_client', obj.kind, obj.name
        );
    end loop;
    for obj in
        select p.oid::regprocedure as name
        from pg_catalog.pg_proc as p
        inner join pg_catalog.pg_namespace as n on p.pronamespace = n.oid
        where n.nspname in ('public', 'google_ai_internal')
    loop
        execute pg_catalog.format('revoke all on function %s from llm_limits_client', obj.name);
    end loop;
    if pg_catalog.to_regnamespace('google_ai_internal') is not null then
        revoke all on schema google_ai_internal from llm_limits_client;
    end if;

    for obj in
        select s.signature::regprocedure as name
        from (
            values
            ('public.acquire(text, integer, text, integer, text[], text, text, uuid)'),
            ('public.commit_usage(uuid, integer, integer, jsonb)'),
            ('public.release(uuid, text, boolean)'),
            ('public.report_rate_limit(uuid, text, integer)'),
            ('public.disable_key(text, text)'),
            ('public.quota_status()'),
            ('public.token_counter(text)'),
            ('public.batch_outlook(text, text[], text)'),
            ('public.request_outcomes(text[])')
        ) as s (signature)
        where pg_catalog.to_regprocedure(s.signature) is not null
    loop
        execute pg_catalog.format('grant execute on function %s to llm_limits_client', obj.name);
    end loop;
end
$$;

-- What a hosted Supabase project has before any of our migrations run:
-- the API roles, the `extensions` schema and Supabase's default grants on
-- `public`. Recreating it locally means our migrations are tested against the
-- same starting point they meet in production, permissive defaults included.
-- Idempotent: `llm-limits local up` runs it on every start.
do $$
begin
  if not exists (select from pg_roles where rolname = 'anon') then
    create role anon nologin noinherit;
  end if;
  if not exists (select from pg_roles where rolname = 'authenticated') then
    create role authenticated nologin noinherit;
  end if;
  if not exists (select from pg_roles where rolname = 'service_role') then
    create role service_role nologin noinherit bypassrls;
  end if;
  if not exists (select from pg_roles where rolname = 'authenticator') then
    create role authenticator login noinherit;
  end if;
end
$$;

grant anon, authenticated, service_role to authenticator;

create schema if not exists extensions;
grant usage on schema extensions to anon, authenticated, service_role;

grant usage on schema public to anon, authenticated, service_role;
alter default privileges in schema public
  grant all on tables to anon, authenticated, service_role;
alter default privileges in schema public
  grant all on functions to anon, authenticated, service_role;
alter default privileges in schema public
  grant all on sequences to anon, authenticated, service_role;

-- Every advisor rule runs only when PostgREST's exposed schemas are known.
do $$
begin
  execute format(
    'alter database %I set pgrst.db_schemas = %L',
    current_database(), 'public, graphql_public'
  );
  execute format(
    'alter database %I set search_path = "$user", public, extensions',
    current_database()
  );
end
$$;

-- The active keys as an RPC, so that a caller needs EXECUTE only.

/*
 * pool_keys: the active keys of the pool, by alias, with the environment
 * variable (or Kaggle secret) that holds each value where a caller runs.
 * Key values never enter the database; this is all a caller learns.
 *
 * Returns one row per active key, by alias. Raises nothing.
 * Example: select * from public.pool_keys();
 */
create function public.pool_keys()
returns table (key_alias text, env_var_name text)
language sql
stable
security definer
set search_path = ''
as $$
    select k.key_alias, k.env_var_name
    from public.google_ai_api_keys as k
    where k.is_active is true
    order by k.key_alias
$$;

comment on function public.pool_keys() is
'The active keys: alias and the environment variable or Kaggle secret that holds the value where the caller runs (never the value).';

revoke all on function public.pool_keys() from public, anon, authenticated;
grant execute on function public.pool_keys() to service_role;

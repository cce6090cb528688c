-- The space llm-limits takes: a Supabase Free project turns read-only at
-- 500 MB.

/*
 * storage_status: the database space llm-limits' own tables take (heap,
 * indexes and TOAST), biggest first, for `llm-limits status`. token_usage is
 * listed but is the bot's own history (counted = false).
 *
 * Returns one row per table: table_name, rows (the planner's estimate),
 * total_bytes, counted (part of llm-limits' own footprint).
 * Raises nothing.
 * Example: select sum(total_bytes) from public.storage_status() where counted;
 */
create or replace function public.storage_status()
returns table (table_name text, est_rows bigint, total_bytes bigint, counted boolean)
language sql
stable
security definer
set search_path = ''
as $$
    select
        c.relname::text,
        greatest(c.reltuples, 0)::bigint,
        pg_catalog.pg_total_relation_size(c.oid),
        c.relname <> 'token_usage'
    from pg_catalog.pg_class as c
    inner join pg_catalog.pg_namespace as n on n.oid = c.relnamespace
    where
        c.relkind = 'r'
        and (
            (n.nspname = 'public' and (c.relname like 'google\_ai\_%' or c.relname = 'token_usage'))
            or n.nspname = 'google_ai_internal'
        )
    order by 3 desc, 1
$$;

comment on function public.storage_status() is
'Database space of llm-limits'' tables (bytes with indexes and TOAST, estimated rows); counted = false for token_usage, the bot''s own history.';
revoke all on function public.storage_status() from public, anon, authenticated;
grant execute on function public.storage_status() to service_role;

-- Run maintenance every five minutes with pg_cron where it is available.
-- Supabase installs pg_cron into pg_catalog; plain Postgres without the
-- extension (or with it configured for another database) skips both steps,
-- so this applies everywhere. cron.schedule with a fixed job name replaces
-- the job, so re-running is idempotent.
do $$
begin
    if exists (select from pg_catalog.pg_available_extensions where name = 'pg_cron')
       and pg_catalog.current_setting('cron.database_name', true) = pg_catalog.current_database()
    then
        create extension if not exists pg_cron with schema pg_catalog;
    end if;
    if exists (select from pg_catalog.pg_extension where extname = 'pg_cron') then
        perform cron.schedule(
            'llm-limits-maintenance', '*/5 * * * *', 'select public.run_maintenance()'
        );
    else
        raise notice 'pg_cron is not available here; schedule public.run_maintenance() yourself';
    end if;
end
$$;

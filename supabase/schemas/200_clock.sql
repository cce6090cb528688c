/*
 * clock: the one clock every RPC reads.
 *
 * clock_timestamp(), not now(): now() is frozen for the whole transaction and
 * a WAIT loop lives inside one. When a session has set llm_limits.now (a fixed
 * instant) and/or llm_limits.clock_skew (a shift of the real clock), they are
 * honoured only while google_ai_internal.clock_switch.steerable is true; the
 * switch is read only then, so an unsteered call costs what it always did.
 *
 * Parameters: none. Returns the current instant as the RPCs see it.
 * Raises: 22007/22008 when the switch is on and a setting is not a valid
 *         timestamptz/interval (a test's own mistake).
 * Example: select google_ai_internal.clock();
 */
create or replace function google_ai_internal.clock()
returns timestamptz
language plpgsql
volatile
set search_path = ''
as $$
declare
    fixed text := pg_catalog.current_setting('llm_limits.now', true);
    skew text := pg_catalog.current_setting('llm_limits.clock_skew', true);
begin
    if coalesce(fixed, '') = '' and coalesce(skew, '') = '' then
        return pg_catalog.clock_timestamp();
    end if;
    if not coalesce(
        (select c.steerable from google_ai_internal.clock_switch as c where c.id), false
    ) then
        return pg_catalog.clock_timestamp();
    end if;
    return
        coalesce(nullif(fixed, '')::timestamptz, pg_catalog.clock_timestamp())
        + coalesce(nullif(skew, '')::interval, interval '0');
end;
$$;

-- Not even service_role: only the definer's RPCs read the clock.
revoke all on function google_ai_internal.clock() from public, anon, authenticated, service_role;

-- Small lookups every RPC shares: the settings row, the bound on free text,
-- the model-name rule and the quota day's end.

/*
 * settings: the one row of public.google_ai_settings.
 *
 * Parameters: none. Returns the row.
 * Raises: P0002 (no_data_found) if the row was deleted, which breaks the
 *         schema's invariant.
 * Example: select (google_ai_internal.settings()).window_ms;
 */
create or replace function google_ai_internal.settings()
returns public.google_ai_settings
language plpgsql
stable
set search_path = ''
as $$
declare
    cfg public.google_ai_settings;
begin
    select s.* into strict cfg from public.google_ai_settings as s where s.id;
    return cfg;
end;
$$;

revoke all on function google_ai_internal.settings() from public, anon, authenticated;

/*
 * check_text: require a text argument to be short enough to audit.
 *
 * Parameters: p_name (the argument's name, for the message), p_value,
 * p_max (the most characters allowed).
 * Returns p_value unchanged. Raises: LL007 when it is longer than p_max.
 * Example: select google_ai_internal.check_text('reason', 'timeout', 500);
 */
create or replace function google_ai_internal.check_text(p_name text, p_value text, p_max integer)
returns text
language plpgsql
immutable
set search_path = ''
as $$
begin
    if p_value is not null and pg_catalog.length(p_value) > p_max then
        raise exception using
            errcode = 'LL007',
            message = pg_catalog.format('%s is longer than %s characters', p_name, p_max),
            hint = pg_catalog.format('Pass a shorter %s.', p_name);
    end if;
    return p_value;
end;
$$;

revoke all on function google_ai_internal.check_text(text, text, integer)
from public, anon, authenticated;

/*
 * resolve_model: the google_ai_model_limits row a caller's model name
 * stands for: the row of that name, else the row with that api_model.
 *
 * Parameters: p_model, a name or an API id ('gemma-3-27b' or 'gemma-3-27b-it').
 * Returns the limits row. Raises: LL001 unknown model.
 * Example: select (google_ai_internal.resolve_model('gemma-3-27b-it')).model;
 */
create or replace function google_ai_internal.resolve_model(p_model text)
returns public.google_ai_model_limits
language plpgsql
stable
set search_path = ''
as $$
declare
    found_row public.google_ai_model_limits;
begin
    select m.* into found_row
    from public.google_ai_model_limits as m
    where m.model = p_model or m.api_model = p_model
    order by (m.model = p_model) desc
    limit 1;
    if not found then
        raise exception using
            errcode = 'LL001',
            message = pg_catalog.format('unknown model %L', pg_catalog.left(p_model, 200)),
            detail = 'No row of public.google_ai_model_limits has this model or api_model.',
            hint = 'Add it with an insert into google_ai_model_limits (or `llm-limits models set`).';
    end if;
    return found_row;
end;
$$;

revoke all on function google_ai_internal.resolve_model(text) from public, anon, authenticated;

/*
 * next_day_start: the next midnight of the quota day, as Google resets RPD.
 *
 * Parameters: p_now, an instant; p_time_zone, the quota day's zone
 * (google_ai_settings.rpd_time_zone). Returns the instant of the next
 * midnight there (DST is the time zone's business). Raises nothing.
 * Example: select google_ai_internal.next_day_start(now(), 'America/Los_Angeles');
 */
create or replace function google_ai_internal.next_day_start(p_now timestamptz, p_time_zone text)
returns timestamptz
language plpgsql
stable
set search_path = ''
as $$
begin
    return ((p_now at time zone p_time_zone)::date + 1)::timestamp at time zone p_time_zone;
end;
$$;

revoke all on function google_ai_internal.next_day_start(timestamptz, text)
from public, anon, authenticated;

-- usage_report's two placeholders become real now that caller classes and
-- fallbacks exist (20261205100000): a caller's class is its policy row's,
-- and a grant is a fallback when acquire recorded the model asked for.
-- Written from supabase/schemas/345_rpc_usage_report.sql.

/*
 * caller_class: the class a caller belongs to now, for usage_report's
 * by => 'class': its google_ai_caller_policies row, else 'default' (as
 * acquire's caller_policy reads it, without the login pin).
 *
 * Parameters: caller, as the ledger records it (may be null).
 * Returns the class name. Raises nothing.
 * Example: select google_ai_internal.caller_class('kaggle-eval');  -- 'default'
 */
create or replace function google_ai_internal.caller_class(caller text)
returns text
language sql
stable
set search_path = ''
as $$
    select coalesce(
        (select p.caller_class from public.google_ai_caller_policies as p
         where p.caller = caller_class.caller),
        'default'
    )
$$;

revoke all on function google_ai_internal.caller_class(text) from public, anon, authenticated;

/*
 * is_fallback: whether a grant served another model than the one its caller
 * asked for: acquire records the model asked for as fallback_from in the
 * ledger row's details.
 *
 * Parameters: r, a ledger row. Returns a boolean. Raises nothing.
 * Example: select google_ai_internal.is_fallback(r) from public.google_ai_reservations as r;
 */
create or replace function google_ai_internal.is_fallback(r public.google_ai_reservations)
returns boolean
language sql
stable
set search_path = ''
as $$
    select r.details #> '{granted,fallback_from}' is not null
$$;

revoke all on function google_ai_internal.is_fallback(public.google_ai_reservations)
from public, anon, authenticated;

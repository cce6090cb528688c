-- EXECUTE is granted per function, never through defaults: PUBLIC's built-in
-- EXECUTE and Supabase's default grants to anon/authenticated are revoked
-- one function at a time. The RPCs are SECURITY DEFINER (owned by the
-- migration role), so a caller needs EXECUTE and nothing else: no table
-- privilege, no RLS policy.

revoke all on function
google_ai_internal.settings(),
google_ai_internal.resolve_model(text),
google_ai_internal.check_text(text, text, integer),
google_ai_internal.ensure_window(text, text, timestamptz, interval, text),
google_ai_internal.lock_window(text, text, public.google_ai_settings),
google_ai_internal.next_day_start(timestamptz, text),
google_ai_internal.candidates(text, text [], timestamptz, integer),
google_ai_internal.try_reserve(
    google_ai_internal.candidate, public.google_ai_model_limits, integer, text, text,
    public.google_ai_settings
),
google_ai_internal.reserve_round(
    public.google_ai_model_limits, google_ai_internal.candidate [], integer, text, text,
    public.google_ai_settings, boolean
),
google_ai_internal.lock_reservation(uuid),
google_ai_internal.recount(public.google_ai_reservations, smallint, integer),
google_ai_internal.audit(text, public.google_ai_reservations, jsonb)
from public, anon, authenticated;

revoke all on function
public.acquire(text, integer, text, integer, text [], text, text),
public.commit_usage(uuid, integer, integer, jsonb),
public.release(uuid, text, boolean),
public.report_rate_limit(uuid, text, integer),
public.disable_key(text, text)
from public, anon, authenticated;

grant execute on function
public.acquire(text, integer, text, integer, text [], text, text),
public.commit_usage(uuid, integer, integer, jsonb),
public.release(uuid, text, boolean),
public.report_rate_limit(uuid, text, integer),
public.disable_key(text, text)
to service_role;

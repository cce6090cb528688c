-- A settlement whose estimate was Google's own count (the client counts
-- Gemma's tokens with its vocabulary, the gateway asks countTokens) changed
-- nothing in its window's totals, yet recount updated the window row by
-- zero: it locked the row every grant of that quota group and model needs,
-- and held it through the settle's commit. recount now returns when the
-- counts do not change.

/*
 * recount: change what a (locked) reservation contributes to its window
 * totals, in one UPDATE of the window row (step 3 of the lock order). p_res
 * is the row as it was before the caller wrote its new counts. A row that
 * already left the window (granted_at <= swept_to) no longer affects the
 * window totals; a row of an earlier quota day no longer affects the day.
 * The sweep later subtracts the new counted values, so the totals stay exact.
 * When nothing changes (a settlement whose estimate was Google's own count,
 * as the carriers' exact counting makes it) the window row is not touched:
 * a settle then takes no lock on the row every grant of its group needs.
 * If the window row is missing (truncated, or dropped by maintenance), it is
 * rebuilt, locked, and recounted from the ledger, which already holds this
 * reservation's new counts: applying the delta on top would count it twice.
 *
 * Parameters: p_res (the reservation before the change), p_requests and
 * p_tokens (what it counts now). Returns nothing. Raises nothing.
 * Example: perform google_ai_internal.recount(res, 0::smallint, 0);  -- a refund
 */
create or replace function google_ai_internal.recount(
    p_res public.google_ai_reservations, p_requests smallint, p_tokens integer
)
returns void
language plpgsql
volatile
set search_path = ''
as $$
declare
    cfg public.google_ai_settings;
begin
    if p_requests = p_res.counted_requests and p_tokens = p_res.counted_tokens then
        return;
    end if;
    update public.google_ai_quota_state as s
    set
        window_requests = s.window_requests + case
            when p_res.granted_at > s.swept_to then p_requests - p_res.counted_requests
            else 0
        end,
        window_tokens = s.window_tokens + case
            when p_res.granted_at > s.swept_to then p_tokens - p_res.counted_tokens
            else 0
        end,
        day_requests = s.day_requests + case
            when p_res.rpd_day = s.rpd_day then p_requests - p_res.counted_requests
            else 0
        end
    where s.quota_group = p_res.quota_group and s.model = p_res.model;
    if found then
        return;
    end if;

    -- The window row is gone (truncated, or dropped by maintenance): rebuild
    -- it, then take its lock and recount it from the ledger in a statement
    -- that starts after the lock is held.
    cfg := google_ai_internal.settings();
    perform google_ai_internal.ensure_window(
        p_res.quota_group, p_res.model, google_ai_internal.clock(),
        google_ai_internal.window_hold(cfg),
        cfg.rpd_time_zone
    );
    perform 1
    from public.google_ai_quota_state as s
    where s.quota_group = p_res.quota_group and s.model = p_res.model
    for update;
    update public.google_ai_quota_state as s
    set (window_requests, window_tokens, day_requests) = (
        select w.window_requests, w.window_tokens, w.day_requests
        from google_ai_internal.window_from_ledger(s.quota_group, s.model, s.swept_to, s.rpd_day) as w
    )
    where s.quota_group = p_res.quota_group and s.model = p_res.model;
end;
$$;

revoke all on function google_ai_internal.recount(public.google_ai_reservations, smallint, integer)
from public, anon, authenticated;

-- recount() rebuilt a missing window row from the ledger and then applied the
-- settlement's delta on top of it. The settling RPCs write the reservation's
-- new counts before they call recount(), so a row rebuilt in the same
-- transaction already holds them: the delta was counted twice (a commit of
-- 40 tokens against an estimate of 100 left window_tokens at -20, a refund
-- left the request count at -1, and negative totals over-grant).
--
-- The rebuild path now locks the window row (whoever inserted it) and
-- recomputes its totals from the ledger. Under READ COMMITTED that read, taken
-- after the lock, sees every settlement that already wrote the window row;
-- settlements still waiting on the lock apply their own deltas afterwards
-- (lock order: reservation row, then window row; unchanged).

/*
 * recount: change what a locked reservation contributes to its window totals.
 *
 * Parameters: p_res the reservation as it was before the caller changed it,
 * p_requests and p_tokens its new counted values (already written to the
 * ledger by the caller). Rows that left the window (granted_at <= swept_to)
 * or belong to an earlier quota day change nothing there.
 * Returns nothing. Raises nothing of its own.
 * Example: perform google_ai_internal.recount(res, 0::smallint, 0);
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
        pg_catalog.make_interval(secs => (cfg.window_ms + cfg.window_guard_ms) / 1000.0),
        cfg.rpd_time_zone
    );
    perform 1
    from public.google_ai_quota_state as s
    where s.quota_group = p_res.quota_group and s.model = p_res.model
    for update;
    update public.google_ai_quota_state as s
    set
        window_requests = coalesce((
            select sum(r.counted_requests)
            from public.google_ai_reservations as r
            where r.quota_group = s.quota_group and r.model = s.model and r.granted_at > s.swept_to
        ), 0),
        window_tokens = coalesce((
            select sum(r.counted_tokens)
            from public.google_ai_reservations as r
            where r.quota_group = s.quota_group and r.model = s.model and r.granted_at > s.swept_to
        ), 0),
        day_requests = coalesce((
            select sum(r.counted_requests)
            from public.google_ai_reservations as r
            where r.quota_group = s.quota_group and r.model = s.model and r.rpd_day = s.rpd_day
        ), 0)
    where s.quota_group = p_res.quota_group and s.model = p_res.model;
end;
$$;

revoke all on function
google_ai_internal.recount(public.google_ai_reservations, smallint, integer)
from public, anon, authenticated;

-- Outages: when Google fails on a quota group and model again and again
-- (5xx, 408, timeouts, cut connections), every attempt still takes a slot of
-- the window, and callers retrying spend the whole minute on a failing
-- upstream. A circuit breaker on the window row stops that:
--   closed     Google answers; failures_in_a_row counts failures since its
--              last answer;
--   open       after outage_after_failures failures in a row the window
--              cools down for outage_cooldown_ms (acquire refuses it with
--              reason cooldown, cooldown_reason upstream_outage; a WAIT
--              keeps its place in line through it);
--   half-open  when the cooldown is over, the next grant is a probe and
--              everyone else is held (cooldown_reason upstream_probe,
--              looking again every outage_cooldown_ms) until it is
--              answered: an answer closes the breaker (outage_ended), a
--              failure opens it again for twice as long, at most
--              outage_cooldown_max_ms. A probe settled without an answer
--              (nothing sent, or its caller gave up) lets the next grant
--              probe at once; one never settled holds the others for
--              outage_cooldown_max_ms at most.
-- Every cooldown is audited (outage_cooldown). The state is the window row's
-- (failures_in_a_row, outage_cooldown_ms, outage_cooled_at and the cooldown
-- columns), changed under its lock (220_window_protocol.sql, step 3) by
-- try_reserve when it grants the probe and by settle when an answer or a
-- failure comes back.

/*
 * cooldown_free_at: when a caller refused by a window's cooldown should look
 * again: when the cooldown ends; but while an outage's probe is out (reason
 * upstream_probe) its answer, not time, ends the hold, so after
 * outage_cooldown_ms.
 *
 * Parameters: p_st, the window row; p_at, the clock; p_cfg, the settings.
 * Returns a timestamptz. Raises nothing.
 * Example: free_at := google_ai_internal.cooldown_free_at(st, at_now, p_cfg);
 */
create or replace function google_ai_internal.cooldown_free_at(
    p_st public.google_ai_quota_state, p_at timestamptz, p_cfg public.google_ai_settings
)
returns timestamptz
language plpgsql
immutable
set search_path = ''
as $$
begin
    return case
        when p_st.cooldown_reason = 'upstream_probe' then least(
            p_st.cooldown_until,
            p_at + pg_catalog.make_interval(secs => p_cfg.outage_cooldown_ms / 1000.0)
        )
        else p_st.cooldown_until
    end;
end;
$$;

revoke all on function google_ai_internal.cooldown_free_at(
    public.google_ai_quota_state, timestamptz, public.google_ai_settings
) from public, anon, authenticated;

/*
 * outage_probe: the window row as a grant leaves it. While an outage is on
 * the row's books (outage_cooldown_ms set), a grant can only come after its
 * cooldown, and it is the probe: everyone else is held (reason
 * upstream_probe) until it is answered, for outage_cooldown_max_ms at most.
 * Otherwise the row is returned as it is.
 *
 * Parameters: p_st, the window row (locked, about to be stored); p_at, the
 * grant's time; p_cfg, the settings.
 * Returns the row to store. Raises nothing.
 * Example: st := google_ai_internal.outage_probe(st, at_now, p_cfg);
 */
create or replace function google_ai_internal.outage_probe(
    p_st public.google_ai_quota_state, p_at timestamptz, p_cfg public.google_ai_settings
)
returns public.google_ai_quota_state
language plpgsql
immutable
set search_path = ''
as $$
begin
    if p_st.outage_cooldown_ms is not null and p_cfg.outage_after_failures > 0 then
        p_st.cooldown_until := p_at
            + pg_catalog.make_interval(secs => p_cfg.outage_cooldown_max_ms / 1000.0);
        p_st.cooldown_reason := 'upstream_probe';
    end if;
    return p_st;
end;
$$;

revoke all on function google_ai_internal.outage_probe(
    public.google_ai_quota_state, timestamptz, public.google_ai_settings
) from public, anon, authenticated;

/*
 * upstream_failed: a sent attempt got no usable answer (5xx, 408, a timeout,
 * a cut connection). Counts it on its window row; the
 * outage_after_failures-th failure in a row starts an outage cooldown of
 * outage_cooldown_ms, and the failure of a probe (granted after the last
 * cooldown began) one twice as long as the last, at most
 * outage_cooldown_max_ms. Attempts granted before the cooldown began fail
 * with the rest and start nothing. A cooldown runs from the failure's
 * settlement (settled_at), replaces a probe's hold and never shortens a
 * 429's cooldown. Each cooldown is audited as outage_cooldown. Nothing
 * happens while outage_after_failures is 0.
 *
 * Parameters: p_res, the reservation (locked, just released as sent);
 * p_cause, what failed ('http 503', 'timeout', ...); p_cfg, the settings.
 * Returns nothing. Raises nothing.
 * Example: perform google_ai_internal.upstream_failed(res, 'http 503', cfg);
 */
create or replace function google_ai_internal.upstream_failed(
    p_res public.google_ai_reservations, p_cause text, p_cfg public.google_ai_settings
)
returns void
language plpgsql
volatile
set search_path = ''
as $$
declare
    locked record;
    st public.google_ai_quota_state;
    probe boolean;
    cooldown_ms integer;
    since timestamptz;
    until timestamptz;
begin
    if p_cfg.outage_after_failures = 0 then
        return;
    end if;
    locked := google_ai_internal.lock_window(p_res.quota_group, p_res.model, p_cfg);
    st := locked.st;
    st.failures_in_a_row := st.failures_in_a_row + 1;
    probe := st.outage_cooldown_ms is not null and p_res.granted_at > st.outage_cooled_at;
    if probe then
        cooldown_ms := least(st.outage_cooldown_ms * 2, p_cfg.outage_cooldown_max_ms);
    elsif st.outage_cooldown_ms is null
        and st.failures_in_a_row >= p_cfg.outage_after_failures then
        cooldown_ms := p_cfg.outage_cooldown_ms;
    end if;
    if cooldown_ms is not null then
        select r.settled_at into since
        from public.google_ai_reservations as r
        where r.id = p_res.id;
        until := coalesce(since, locked.at_now)
            + pg_catalog.make_interval(secs => cooldown_ms / 1000.0);
        st.outage_cooldown_ms := cooldown_ms;
        -- Stamped under the lock: every grant after it comes after this cooldown.
        st.outage_cooled_at := locked.at_now;
        if st.cooldown_until is null or st.cooldown_until < until
            or st.cooldown_reason in ('upstream_outage', 'upstream_probe') then
            st.cooldown_until := until;
            st.cooldown_reason := 'upstream_outage';
        end if;
        perform google_ai_internal.audit('outage_cooldown', p_res, pg_catalog.jsonb_build_object(
            'quota_group', p_res.quota_group,
            'cause', p_cause,
            'failures_in_a_row', st.failures_in_a_row,
            'cooldown_ms', cooldown_ms,
            'cooldown_until', st.cooldown_until,
            'probe', probe
        ));
    end if;
    perform google_ai_internal.store_window(st);
end;
$$;

revoke all on function google_ai_internal.upstream_failed(
    public.google_ai_reservations, text, public.google_ai_settings
) from public, anon, authenticated;

/*
 * upstream_answered: Google answered an attempt (any status but 5xx and
 * 408): the failures in a row are forgotten, and an outage is over: its
 * cooldown or probe hold ends at once (a 429's cooldown stays) and the end
 * is audited as outage_ended. Takes no lock when there is nothing to forget.
 *
 * Parameters: p_res, the reservation (locked); p_answer, the answer
 * ('http 200', ...); p_cfg, the settings.
 * Returns nothing. Raises nothing.
 * Example: perform google_ai_internal.upstream_answered(res, 'http 200', cfg);
 */
create or replace function google_ai_internal.upstream_answered(
    p_res public.google_ai_reservations, p_answer text, p_cfg public.google_ai_settings
)
returns void
language plpgsql
volatile
set search_path = ''
as $$
declare
    locked record;
    st public.google_ai_quota_state;
begin
    perform 1
    from public.google_ai_quota_state as s
    where
        s.quota_group = p_res.quota_group and s.model = p_res.model
        and (s.failures_in_a_row > 0 or s.outage_cooldown_ms is not null);
    if not found then
        return;
    end if;
    locked := google_ai_internal.lock_window(p_res.quota_group, p_res.model, p_cfg);
    st := locked.st;
    if st.outage_cooldown_ms is not null then
        if st.cooldown_reason in ('upstream_outage', 'upstream_probe') then
            st.cooldown_until := null;
            st.cooldown_reason := null;
        end if;
        perform google_ai_internal.audit('outage_ended', p_res, pg_catalog.jsonb_build_object(
            'quota_group', p_res.quota_group,
            'answer', p_answer,
            'failures_in_a_row', st.failures_in_a_row,
            'last_cooldown_ms', st.outage_cooldown_ms
        ));
    end if;
    st.failures_in_a_row := 0;
    st.outage_cooldown_ms := null;
    st.outage_cooled_at := null;
    perform google_ai_internal.store_window(st);
end;
$$;

revoke all on function google_ai_internal.upstream_answered(
    public.google_ai_reservations, text, public.google_ai_settings
) from public, anon, authenticated;

/*
 * probe_unanswered: a grant was settled without an answer from Google
 * (nothing was sent, or its caller gave up). If it was an outage's probe
 * (the hold is on and it was granted after the last cooldown began), the
 * hold ends now, so the next grant probes instead of everyone waiting for an
 * answer that will not come. Takes no lock when no probe is out.
 *
 * Parameters: p_res, the reservation (locked); p_cfg, the settings.
 * Returns nothing. Raises nothing.
 * Example: perform google_ai_internal.probe_unanswered(res, cfg);
 */
create or replace function google_ai_internal.probe_unanswered(
    p_res public.google_ai_reservations, p_cfg public.google_ai_settings
)
returns void
language plpgsql
volatile
set search_path = ''
as $$
declare
    locked record;
    st public.google_ai_quota_state;
begin
    perform 1
    from public.google_ai_quota_state as s
    where
        s.quota_group = p_res.quota_group and s.model = p_res.model
        and s.cooldown_reason = 'upstream_probe' and p_res.granted_at > s.outage_cooled_at;
    if not found then
        return;
    end if;
    locked := google_ai_internal.lock_window(p_res.quota_group, p_res.model, p_cfg);
    st := locked.st;
    if st.cooldown_reason = 'upstream_probe' then
        st.cooldown_until := locked.at_now;
        perform google_ai_internal.store_window(st);
    end if;
end;
$$;

revoke all on function google_ai_internal.probe_unanswered(
    public.google_ai_reservations, public.google_ai_settings
) from public, anon, authenticated;

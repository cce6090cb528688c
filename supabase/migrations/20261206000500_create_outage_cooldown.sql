-- Outage cooldowns: a circuit breaker per quota group and model, so that an
-- outage of Google (5xx, timeouts) no longer spends the window's slots on
-- attempts that fail. After outage_after_failures failures in a row the
-- window cools down (reason cooldown: a WAIT keeps its place in line), then
-- one probe goes through while the others are held until it is answered; a
-- failed probe doubles the cooldown up to outage_cooldown_max_ms, and a probe
-- settled without an answer lets the next grant probe. Every cooldown is
-- audited (outage_cooldown), and so is the end (outage_ended).
-- Written from supabase/schemas (010, 070, 080, 220, 225, 230, 240, 315).
--
-- try_reserve changes in two lines only: a cooldown's refusal asks
-- cooldown_free_at when to look again (limits_free_at), and a grant passes
-- its window row through outage_probe before storing it (record_grant). The
-- waiters behind the head also ask cooldown_free_at (group_slots, in
-- 20261206002000), so that they look again soon while a probe is out, not
-- when its hold would end. settle tells
-- the breaker what came back (upstream_failed, upstream_answered,
-- probe_unanswered); its answers are unchanged.
--
-- Lock order: that of 220_window_protocol.sql (the reservation row, then its
-- window row); the breaker's state lives on the window row.

alter table public.google_ai_settings
add column outage_after_failures integer not null default 3
check (outage_after_failures between 0 and 1000),
add column outage_cooldown_ms integer not null default 1000
check (outage_cooldown_ms between 10 and 600000),
add column outage_cooldown_max_ms integer not null default 8000
check (outage_cooldown_max_ms between 10 and 3600000),
add constraint google_ai_settings_outage_cooldown_order
check (outage_cooldown_max_ms >= outage_cooldown_ms);

comment on column public.google_ai_settings.outage_after_failures is
'After this many failed answers in a row on a quota group and model (5xx, 408, a timeout, a cut connection), Google is taken to be out there: acquire refuses it (reason cooldown) for outage_cooldown_ms, then lets one probe through and holds everyone else until it is answered. 0 turns this off.';
comment on column public.google_ai_settings.outage_cooldown_ms is
'The first cooldown of an outage; while a probe is out, waiters look again this often. Each probe that fails doubles the cooldown, up to outage_cooldown_max_ms.';
comment on column public.google_ai_settings.outage_cooldown_max_ms is
'The longest cooldown of an outage, and the longest a probe that never answers (its caller gone) holds the others back.';

-- Live windows start closed: Google answered, as far as anyone knows.
alter table public.google_ai_quota_state
add column failures_in_a_row integer not null default 0,
add column outage_cooldown_ms integer,
add column outage_cooled_at timestamptz;

-- Not valid, then validated: the check is added without blocking writers.
alter table public.google_ai_audit_records
drop constraint google_ai_audit_records_event_check,
add constraint google_ai_audit_records_event_check check (
    event in (
        'granted', 'refused', 'committed', 'released', 'rate_limited',
        'expired', 'config_changed', 'key_disabled', 'key_enabled', 'limit_observed',
        'outage_cooldown', 'outage_ended'
    )
) not valid;
alter table public.google_ai_audit_records
validate constraint google_ai_audit_records_event_check;

/*
 * store_window: write a window row that the caller locked with lock_window
 * and changed in its copy (totals, sweep horizon, quota day, cooldown,
 * pacing, outage) back to the table.
 *
 * Parameters: p_st, the changed copy. Returns nothing. Raises nothing.
 * Example: see try_reserve and report_rate_limit.
 */
create or replace function google_ai_internal.store_window(p_st public.google_ai_quota_state)
returns void
language plpgsql
volatile
set search_path = ''
set plan_cache_mode = force_generic_plan
as $$
begin
    update public.google_ai_quota_state as s
    set
        window_requests = p_st.window_requests,
        window_tokens = p_st.window_tokens,
        swept_to = p_st.swept_to,
        rpd_day = p_st.rpd_day,
        day_requests = p_st.day_requests,
        cooldown_until = p_st.cooldown_until,
        cooldown_reason = p_st.cooldown_reason,
        paced_until = p_st.paced_until,
        lead_priority = p_st.lead_priority,
        lead_at = p_st.lead_at,
        failures_in_a_row = p_st.failures_in_a_row,
        outage_cooldown_ms = p_st.outage_cooldown_ms,
        outage_cooled_at = p_st.outage_cooled_at
    where s.quota_group = p_st.quota_group and s.model = p_st.model;
end;
$$;

comment on function google_ai_internal.store_window(public.google_ai_quota_state) is
'Write back a window row locked by lock_window (step 3 of the lock order, same transaction).';
revoke all on function google_ai_internal.store_window(public.google_ai_quota_state)
from public, anon, authenticated;

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
language sql
immutable
set search_path = ''
as $$
    select case
        when p_st.cooldown_reason = 'upstream_probe' then least(
            p_st.cooldown_until,
            p_at + pg_catalog.make_interval(secs => p_cfg.outage_cooldown_ms / 1000.0)
        )
        else p_st.cooldown_until
    end
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

/*
 * limits_free_at: the limits of a window that bind a request now, each with
 * the moment it frees: a cooldown, the day (RPD, less the day's reserves of
 * the classes above the caller's, which are never lent), RPM and TPM over
 * the exact log.
 *
 * Parameters: p_st, the locked and swept window row; p_cand; p_model (a
 * limits row name); p_tokens; p_policy; p_cfg; p_now and p_hold (as
 * lock_window read them).
 * Returns the binding limits (why) and when each frees (frees), empty when
 * none binds. Raises nothing.
 * Example: select * from google_ai_internal.limits_free_at(st, cand, 'gemma-3-27b', 1200,
 *              pol, cfg, now(), interval '61 s');
 */
create or replace function google_ai_internal.limits_free_at(
    p_st public.google_ai_quota_state,
    p_cand google_ai_internal.candidate,
    p_model text,
    p_tokens integer,
    p_policy google_ai_internal.caller_policy,
    p_cfg public.google_ai_settings,
    p_now timestamptz,
    p_hold interval,
    out why text [],
    out frees timestamptz []
)
language plpgsql
stable
set search_path = ''
as $$
begin
    why := '{}';
    frees := '{}';
    if p_st.cooldown_until > p_now then
        why := why || 'cooldown'::text;
        frees := frees || google_ai_internal.cooldown_free_at(p_st, p_now, p_cfg);
    end if;
    if p_cand.rpd is not null
        and p_st.day_requests + 1 > pg_catalog.floor(p_cand.rpd * least(p_policy.rpd_share, 1)) then
        why := why || 'rpd'::text;
        frees := frees || google_ai_internal.next_day_start(p_now, p_cfg.rpd_time_zone);
    end if;
    if p_cand.rpm is not null and p_st.window_requests + 1 > p_cand.rpm then
        why := why || 'rpm'::text;
        frees := frees || google_ai_internal.slot_frees_at(
            p_cand.quota_group, p_model, p_st.swept_to, p_hold,
            p_st.window_requests - p_cand.rpm, null
        );
    end if;
    if p_cand.tpm is not null and p_st.window_tokens + p_tokens > p_cand.tpm then
        why := why || 'tpm'::text;
        frees := frees || google_ai_internal.tokens_free_at(
            p_cand.quota_group, p_model, p_st.swept_to, p_hold,
            p_st.window_tokens + p_tokens - p_cand.tpm, null
        );
    end if;
end;
$$;

revoke all on function google_ai_internal.limits_free_at(
    public.google_ai_quota_state, google_ai_internal.candidate, text, integer,
    google_ai_internal.caller_policy, public.google_ai_settings, timestamptz, interval
) from public, anon, authenticated;

/*
 * record_grant: write a grant: its ledger row (with how long its caller has
 * waited) and the window row's new totals, pacing and lead.
 *
 * Parameters: p_st, the locked window row; p_cand, p_model; p_tokens,
 * p_caller, p_request_id; p_cfg; p_policy; p_waiting_since (when the wait
 * began; null: this statement's start); p_now and p_hold.
 * Returns the reservation id. Raises nothing of its own.
 * Example: rid := google_ai_internal.record_grant(st, cand, m, 1200, 'bot', 'msg-42', cfg,
 *                     pol, null, now(), interval '61 s');
 */
create or replace function google_ai_internal.record_grant(
    p_st public.google_ai_quota_state,
    p_cand google_ai_internal.candidate,
    p_model public.google_ai_model_limits,
    p_tokens integer,
    p_caller text,
    p_request_id text,
    p_cfg public.google_ai_settings,
    p_policy google_ai_internal.caller_policy,
    p_waiting_since timestamptz,
    p_now timestamptz,
    p_hold interval
)
returns uuid
language plpgsql
volatile
set search_path = ''
as $$
declare
    st public.google_ai_quota_state := p_st;
    reservation_id uuid;
begin
    insert into public.google_ai_reservations (
        key_alias, quota_group, model, api_model, estimated_tokens, counted_tokens,
        granted_at, rpd_day, lease_until, caller, request_id, waited_ms, caller_class
    ) values (
        p_cand.key_alias, p_cand.quota_group, p_model.model,
        coalesce(p_model.api_model, p_model.model), p_tokens, p_tokens, p_now, st.rpd_day,
        p_now + pg_catalog.make_interval(secs => p_cfg.lease_ms / 1000.0),
        p_caller, p_request_id,
        -- A WAIT began with its ticket (on the clock); otherwise acquire
        -- runs as one statement, whose start is when the caller asked.
        greatest(0, pg_catalog.round(extract(epoch from coalesce(
            p_now - p_waiting_since,
            pg_catalog.clock_timestamp() - pg_catalog.statement_timestamp()
        )) * 1000))::integer,
        p_policy.caller_class
    )
    returning id into reservation_id;

    st.window_requests := st.window_requests + 1;
    st.window_tokens := st.window_tokens + p_tokens;
    st.day_requests := st.day_requests + 1;
    if p_cand.rpm > 0 then
        st.paced_until := greatest(st.paced_until, p_now) + p_hold / p_cand.rpm;
    end if;
    if st.lead_at is null or st.lead_at <= p_now - p_hold or p_policy.priority <= st.lead_priority then
        st.lead_priority := p_policy.priority;
        st.lead_at := p_now;
    end if;
    st := google_ai_internal.outage_probe(st, p_now, p_cfg);
    perform google_ai_internal.store_window(st);
    return reservation_id;
end;
$$;

revoke all on function google_ai_internal.record_grant(
    public.google_ai_quota_state, google_ai_internal.candidate, public.google_ai_model_limits,
    integer, text, text, public.google_ai_settings, google_ai_internal.caller_policy,
    timestamptz, timestamptz, interval
) from public, anon, authenticated;

/*
 * settle: settle a grant with what Google answered, and say what to do next.
 *
 * Parameters:
 *   reservation_id   the grant's id (acquire's reservation_id)
 *   http_status      Google's HTTP status, or null when no answer came
 *   response         Google's JSON body as received: the response on 2xx
 *                    (its usageMetadata is what counts; the rest is ignored),
 *                    the error body otherwise; null when there is none
 *   transport_error  how the exchange failed when it did not complete:
 *                      timeout          no answer in time (sent)
 *                      connection_lost  cut after sending, a stream cut mid-way (sent)
 *                      connect_failed   no connection, nothing sent (unsent)
 *                      not_sent         nothing left: the SDK refused to build the
 *                                       request, or the caller stopped first (unsent)
 *                      cancelled        the caller gave up during the call (sent)
 *                    A transport error wins over a status: a 200 stream cut
 *                    mid-way is `connection_lost`.
 *
 * Decides (the action column):
 *   commit          2xx: commit_usage with usageMetadata.promptTokenCount
 *                   (the estimate when absent) and candidates + thoughts
 *                   tokens as the completion
 *   rate_limited    429: report_rate_limit with the QuotaFailure/RetryInfo
 *                   read here (a per-day violation wins); a quotaValue that
 *                   differs from the table is recorded (learn_limits)
 *   disable_key     Google refuses the key itself (key_rejection: invalid,
 *                   leaked, blocked, its project without the API): released
 *                   as sent, the key disabled (audited); try again on
 *                   another key
 *   release_sent    5xx, 408, timeout, lost connection (retry), any other
 *                   status (no retry: the request itself is wrong), cancelled
 *   release_unsent  nothing reached Google: refunded
 * Outages (225_outage_cooldown.sql): a sent attempt with no usable answer
 * (5xx, 408, timeout, lost connection) counts towards an outage cooldown of
 * its quota group and model; any answer from Google ends one; a probe
 * settled without one lets the next grant probe.
 *
 * Returns one row (action, retry, retry_after_ms): retry says whether another
 * attempt may succeed; retry_after_ms is how long to pause before acquiring
 * again (0 after a 429 and a disabled key: acquire itself knows the cooldown
 * and the keys left; a jittered retry_backoff_ms after a transient failure;
 * null when retry is false). Attempts are the caller's to count.
 * Idempotent: settling a settled reservation again changes nothing and
 * answers the same action.
 *
 * Raises: LL006 unknown reservation, LL007 neither status nor transport
 *         error, a status outside 100..599, or an unknown transport error.
 * Example: select * from public.settle('0d6f...'::uuid, 429,
 *     '{"error": {"code": 429, "details": [{"@type":
 *       "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": "21s"}]}}');
 */
create or replace function public.settle(
    reservation_id uuid,
    http_status integer,
    response jsonb default null,
    transport_error text default null
)
returns table (action text, retry boolean, retry_after_ms integer)
language plpgsql
volatile
security definer
set search_path = ''
as $$
declare
    cfg public.google_ai_settings := google_ai_internal.settings();
    res public.google_ai_reservations;
    err jsonb;
    violation record;
    rejected text;
    usage jsonb;
    backoff integer;
    settled boolean;
begin
    if http_status is null and transport_error is null then
        raise exception using errcode = 'LL007',
            message = 'settle needs http_status or transport_error',
            hint = 'Pass Google''s HTTP status, or how the call failed (timeout, connection_lost, ...).';
    end if;
    if http_status is not null and http_status not between 100 and 599 then
        raise exception using errcode = 'LL007',
            message = pg_catalog.format('http_status must be between 100 and 599, got %s', http_status),
            hint = 'Pass the HTTP status Google answered with.';
    end if;
    if transport_error is not null and transport_error not in (
        'timeout', 'connection_lost', 'connect_failed', 'not_sent', 'cancelled'
    ) then
        raise exception using errcode = 'LL007',
            message = pg_catalog.format('unknown transport_error %L',
                                        pg_catalog.left(transport_error, 50)),
            hint = 'One of timeout, connection_lost, connect_failed, not_sent, cancelled.';
    end if;

    res := google_ai_internal.lock_reservation(settle.reservation_id);
    settled := res.status not in ('reserved', 'expired');
    err := google_ai_internal.google_error(response);
    backoff := pg_catalog.round(cfg.retry_backoff_ms * (0.5 + pg_catalog.random() / 2))::integer;

    if transport_error is not null then
        action := case
            when transport_error in ('connect_failed', 'not_sent') then 'release_unsent'
            else 'release_sent'
        end;
        retry := transport_error in ('timeout', 'connection_lost', 'connect_failed');
        if not settled then
            perform public.release(res.id, transport_error, action = 'release_sent');
        end if;
    elsif http_status between 200 and 299 then
        action := 'commit';
        retry := false;
        usage := case
            when pg_catalog.jsonb_typeof(response) = 'array' then response -> -1 -> 'usageMetadata'
            else response -> 'usageMetadata'
        end;
        if not settled then
            perform public.commit_usage(
                res.id,
                coalesce(
                    case when usage ->> 'promptTokenCount' ~ '^[0-9]{1,9}$'
                        then (usage ->> 'promptTokenCount')::integer end,
                    res.estimated_tokens
                ),
                coalesce(
                    case when usage ->> 'candidatesTokenCount' ~ '^[0-9]{1,9}$'
                        then (usage ->> 'candidatesTokenCount')::integer end, 0
                ) + coalesce(
                    case when usage ->> 'thoughtsTokenCount' ~ '^[0-9]{1,9}$'
                        then (usage ->> 'thoughtsTokenCount')::integer end, 0
                ),
                pg_catalog.jsonb_strip_nulls(pg_catalog.jsonb_build_object(
                    'model_version', response ->> 'modelVersion',
                    'finish_reason', response -> 'candidates' -> 0 ->> 'finishReason',
                    'thoughts_tokens', usage -> 'thoughtsTokenCount'
                ))
            );
        end if;
    elsif http_status = 429 then
        action := 'rate_limited';
        retry := true;
        if not settled then
            -- First: ending an outage must not end this 429's cooldown.
            perform google_ai_internal.upstream_answered(res, 'http 429', cfg);
            violation := google_ai_internal.quota_violation(err);
            perform public.report_rate_limit(res.id, violation.quota_id, violation.retry_delay_ms);
            perform google_ai_internal.observe_limits(res, violation.violations, cfg);
        end if;
        backoff := 0;
    else
        rejected := google_ai_internal.key_rejection(http_status, err);
        if rejected is not null then
            action := 'disable_key';
            retry := true;
            backoff := 0;
            if not settled then
                perform public.release(res.id, rejected, true);
                perform public.disable_key(res.key_alias, rejected);
            end if;
        else
            action := 'release_sent';
            retry := http_status >= 500 or http_status = 408;
            if not settled then
                perform public.release(res.id, pg_catalog.format('http %s', http_status), true);
            end if;
        end if;
    end if;
    -- A failure counts towards an outage, an answer ends one (a 429's above),
    -- nothing sent or a caller gone leaves no answer to wait for.
    if not settled and action = 'release_sent' and retry then
        perform google_ai_internal.upstream_failed(
            res, coalesce(transport_error, pg_catalog.format('http %s', http_status)), cfg
        );
    elsif not settled and transport_error is null and http_status <> 429 then
        perform google_ai_internal.upstream_answered(
            res, pg_catalog.format('http %s', http_status), cfg
        );
    elsif not settled and transport_error is not null then
        perform google_ai_internal.probe_unanswered(res, cfg);
    end if;
    retry_after_ms := case when retry then backoff end;
    return next;
end;
$$;

comment on function public.settle(uuid, integer, jsonb, text) is
'Settle a grant with Google''s answer (HTTP status and JSON body) or the transport failure, and say what to do next: action commit, rate_limited, disable_key, release_sent or release_unsent; retry; retry_after_ms before acquiring again. Google''s error rules live here. Idempotent.';

revoke all on function public.settle(uuid, integer, jsonb, text) from public, anon, authenticated;
grant execute on function public.settle(uuid, integer, jsonb, text) to service_role;


-- Settling a reservation: commit_usage (the call succeeded), release (it
-- failed or never ran), report_rate_limit (Google said 429 anyway). Lock
-- order (220_window_protocol.sql): the reservation row first, then its
-- window row.

/*
 * audit: append one audit record about a reservation (429s, expiries).
 * Parameters: the event, the reservation row, its details (nulls stripped).
 * Returns nothing. Raises nothing of its own.
 * Example: perform google_ai_internal.audit('rate_limited', res, '{}');
 */
create or replace function google_ai_internal.audit(
    p_event text, p_res public.google_ai_reservations, p_details jsonb
)
returns void
language plpgsql
volatile
set search_path = ''
as $$
begin
    insert into public.google_ai_audit_records (ts, event, key_alias, model, reservation_id, details)
    values (
        google_ai_internal.clock(), p_event, p_res.key_alias, p_res.model, p_res.id,
        pg_catalog.jsonb_strip_nulls(p_details)
    );
end;
$$;

revoke all on function google_ai_internal.audit(text, public.google_ai_reservations, jsonb)
from public, anon, authenticated;

/*
 * commit_usage: the call succeeded; record what it really used.
 *
 * Replaces the estimate with the actual input tokens in the reservation's
 * original slot of the window (freeing or taking tokens at once), writes one
 * token_usage row (meta gets key_alias and reservation_id). The ledger row is
 * the record of the commit (google_ai_audit_log shows it as `committed`).
 * Idempotent: a repeat returns false and writes nothing. A late commit of
 * an expired reservation is accepted.
 *
 * Returns true when this call committed the reservation.
 * Raises: LL006 unknown reservation, LL002 bad token counts, LL007 meta not
 *         an object, LL008 reservation released or rate-limited.
 * Example: select public.commit_usage('…uuid…', 812, 95, '{"finish_reason":"STOP"}');
 */
create or replace function public.commit_usage(
    reservation_id uuid,
    prompt_tokens integer,
    completion_tokens integer default 0,
    meta jsonb default '{}'
)
returns boolean
language plpgsql
volatile
security definer
set search_path = ''
set plan_cache_mode = force_generic_plan
as $$
declare
    res public.google_ai_reservations;
    usage_meta jsonb;
    at_now timestamptz := google_ai_internal.clock();
begin
    if prompt_tokens is null or prompt_tokens < 0
       or completion_tokens is null or completion_tokens < 0
       -- token_usage.total_tokens is an integer: the sum must fit too.
       or prompt_tokens::bigint + completion_tokens > 2147483647 then
        raise exception using errcode = 'LL002',
            message = pg_catalog.format(
                'prompt_tokens and completion_tokens must be non-negative with a sum below 2^31, got %s and %s',
                coalesce(prompt_tokens::text, 'null'), coalesce(completion_tokens::text, 'null')),
            hint = 'Pass usage_metadata.prompt_token_count and candidates_token_count.';
    end if;
    if meta is null or pg_catalog.jsonb_typeof(meta) <> 'object' then
        raise exception using errcode = 'LL007', message = 'meta must be a JSON object',
            hint = 'Pass ''{}'' when there is nothing to add.';
    end if;
    if pg_catalog.octet_length(meta::text) > 16384 then
        raise exception using errcode = 'LL007', message = 'meta is larger than 16 kB',
            hint = 'Keep meta to a few small fields (model version, finish reason).';
    end if;

    res := google_ai_internal.lock_reservation(commit_usage.reservation_id);
    if res.status = 'committed' then
        return false;
    end if;
    if res.status not in ('reserved', 'expired') then
        raise exception using errcode = 'LL008',
            message = pg_catalog.format('reservation %s is already %s', res.id, res.status),
            hint = 'A released or rate-limited reservation cannot be committed; acquire again.';
    end if;

    -- No indexed column changes: a HOT update on the row's own page.
    update public.google_ai_reservations as r
    set
        status = 'committed',
        actual_tokens = prompt_tokens,
        completion_tokens = commit_usage.completion_tokens,
        counted_tokens = prompt_tokens,
        settled_at = at_now
    where r.id = res.id;

    usage_meta := meta || pg_catalog.jsonb_build_object(
        'key_alias', res.key_alias,
        'reservation_id', res.id,
        'quota_group', res.quota_group,
        'estimated_tokens', res.estimated_tokens,
        'caller', res.caller
    );
    -- Through jsonb_populate_record: the adopted table's legacy column types
    -- (request_id text or uuid, meta json or jsonb, ...) are not ours to know.
    insert into public.token_usage (
        ts, model, prompt_tokens, completion_tokens, total_tokens, request_id, meta
    )
    select u.ts, u.model, u.prompt_tokens, u.completion_tokens, u.total_tokens, u.request_id, u.meta
    from pg_catalog.jsonb_populate_record(
        null::public.token_usage,
        pg_catalog.jsonb_build_object(
            'ts', at_now,
            'model', res.api_model,
            'prompt_tokens', prompt_tokens,
            'completion_tokens', completion_tokens,
            'total_tokens', prompt_tokens + completion_tokens,
            'request_id', res.request_id,
            'meta', usage_meta
        )
    ) as u;
    -- Last, so the shared window row stays locked only until commit.
    perform google_ai_internal.recount(res, res.counted_requests, prompt_tokens);
    return true;
end;
$$;

comment on function public.commit_usage(uuid, integer, integer, jsonb) is
'Settle a grant as used: reconcile the estimate with the actual input tokens in its window slot, write token_usage; the ledger row records the commit. Idempotent.';
revoke all on function public.commit_usage(uuid, integer, integer, jsonb) from public, anon, authenticated;
grant execute on function public.commit_usage(uuid, integer, integer, jsonb) to service_role;

/*
 * release: the call did not complete.
 *
 *   sent = false  it never reached Google: refund the request and the tokens
 *                 (in the window and in the day);
 *   sent = true   it may have reached Google (timeout, 5xx): keep it counted.
 *
 * The ledger row records the release (reason and previous status in
 * details.released). Idempotent: releasing a settled reservation returns
 * false and changes nothing (so a client's `finally: release()` is always
 * safe). Returns true when this call released the reservation.
 * Raises: LL006 unknown reservation, LL007 reason too long.
 * Example: select public.release('…uuid…', 'timeout', true);
 */
create or replace function public.release(
    reservation_id uuid,
    reason text default null,
    sent boolean default false
)
returns boolean
language plpgsql
volatile
security definer
set search_path = ''
as $$
declare
    res public.google_ai_reservations;
    refund boolean := not coalesce(sent, false);
begin
    perform google_ai_internal.check_text('reason', reason, 500);
    res := google_ai_internal.lock_reservation(release.reservation_id);
    if res.status not in ('reserved', 'expired') then
        return false;
    end if;
    update public.google_ai_reservations as r
    set
        status = 'released',
        counted_requests = case when refund then 0 else r.counted_requests end,
        counted_tokens = case when refund then 0 else r.counted_tokens end,
        settled_at = google_ai_internal.clock(),
        details = coalesce(r.details, '{}'::jsonb) || pg_catalog.jsonb_build_object(
            'released', pg_catalog.jsonb_strip_nulls(pg_catalog.jsonb_build_object(
                'reason', reason, 'previous_status', res.status
            ))
        )
    where r.id = res.id;
    if refund then
        perform google_ai_internal.recount(res, 0::smallint, 0);
    end if;
    return true;
end;
$$;

comment on function public.release(uuid, text, boolean) is
'Settle a grant that did not complete: sent=false refunds it, sent=true keeps it counted; the ledger row records the release. Idempotent.';
revoke all on function public.release(uuid, text, boolean) from public, anon, authenticated;
grant execute on function public.release(uuid, text, boolean) to service_role;

/*
 * report_rate_limit: Google answered 429 despite our accounting.
 *
 * The call stays counted. The reservation's (group, model) cools down until
 * now + retry_delay_ms (default google_ai_settings.default_cooldown_ms), or
 * until the next midnight of the quota day when quota_id names a per-day
 * quota. A cooldown is only ever extended. Audited as `rate_limited`.
 * Repeating it is harmless.
 *
 * Returns the cooldown end.
 * Raises: LL006 unknown reservation, LL007 bad quota_id or retry_delay_ms.
 * Example: select public.report_rate_limit('…uuid…',
 *            'GenerateRequestsPerMinutePerProjectPerModel-FreeTier', 21000);
 */
create or replace function public.report_rate_limit(
    reservation_id uuid,
    quota_id text default null,
    retry_delay_ms integer default null
)
returns timestamptz
language plpgsql
volatile
security definer
set search_path = ''
as $$
declare
    cfg public.google_ai_settings := google_ai_internal.settings();
    res public.google_ai_reservations;
    st public.google_ai_quota_state;
    locked record;
    at_now timestamptz;
    until timestamptz;
    per_day boolean := coalesce(quota_id ilike '%PerDay%', false);
begin
    perform google_ai_internal.check_text('quota_id', quota_id, 300);
    if retry_delay_ms is not null and (retry_delay_ms < 0 or retry_delay_ms > 86400000) then
        raise exception using errcode = 'LL007',
            message = pg_catalog.format('retry_delay_ms must be between 0 and 86400000, got %s',
                                        retry_delay_ms),
            hint = 'Pass RetryInfo.retryDelay in milliseconds, or null when Google gave none.';
    end if;
    res := google_ai_internal.lock_reservation(report_rate_limit.reservation_id);
    locked := google_ai_internal.lock_window(res.quota_group, res.model, cfg);
    st := locked.st;
    at_now := locked.at_now;
    -- A per-day violation may carry a short retryDelay; the day is what binds.
    until := case
        when per_day then google_ai_internal.next_day_start(at_now, cfg.rpd_time_zone)
        else at_now + pg_catalog.make_interval(
            secs => coalesce(retry_delay_ms, cfg.default_cooldown_ms) / 1000.0
        )
    end;
    if st.cooldown_until is null or until > st.cooldown_until then
        st.cooldown_until := until;
        st.cooldown_reason := coalesce(quota_id, 'rate_limited');
    end if;
    perform google_ai_internal.store_window(st);
    if res.status in ('reserved', 'expired') then
        update public.google_ai_reservations as r
        set status = 'rate_limited', settled_at = at_now
        where r.id = res.id;
    end if;
    perform google_ai_internal.audit('rate_limited', res, pg_catalog.jsonb_build_object(
        'quota_id', quota_id,
        'retry_delay_ms', retry_delay_ms,
        'per_day', per_day,
        'cooldown_until', st.cooldown_until,
        'quota_group', res.quota_group,
        'previous_status', res.status
    ));
    return st.cooldown_until;
end;
$$;

comment on function public.report_rate_limit(uuid, text, integer) is
'Record a 429 from Google for a grant: it stays counted and its group and model cool down (until the next Pacific midnight for a per-day quota).';
revoke all on function public.report_rate_limit(uuid, text, integer) from public, anon, authenticated;
grant execute on function public.report_rate_limit(uuid, text, integer) to service_role;

-- The writers of the call record (see 20261129001210): a grant writes its
-- ledger row and nothing else, a refusal folds, commit and release settle the
-- ledger row in place (HOT), and the rare events append to
-- google_ai_audit_records. Lock order (see 20261124000400) gains one last
-- step: a refusal's fold row, locked after the windows, and only by callers
-- of the same caller, model, key set and reason, who lock the same windows in
-- the same order before it; no caller of another group ever waits on it.

/*
 * try_reserve: one try on one candidate: lock its window, decide, and on
 * success write the reservation (with the time acquire has run so far) and
 * the new totals. On refusal nothing is written. retry_after_ms is the
 * truthful earliest moment every binding dimension has freed, computed from
 * the ledger (a release can only make it sooner).
 *
 * Returns (granted, reservation_id, reason, retry_after_ms). Raises nothing of
 * its own. Example: see google_ai_internal.reserve_round.
 */
create or replace function google_ai_internal.try_reserve(
    p_cand google_ai_internal.candidate,
    p_model public.google_ai_model_limits,
    p_tokens integer,
    p_caller text,
    p_request_id text,
    p_cfg public.google_ai_settings,
    out granted boolean,
    out reservation_id uuid,
    out reason text,
    out retry_after_ms integer
)
language plpgsql
volatile
set search_path = ''
set plan_cache_mode = force_generic_plan
as $$
declare
    hold interval := pg_catalog.make_interval(
        secs => (p_cfg.window_ms + p_cfg.window_guard_ms) / 1000.0
    );
    locked record;
    st public.google_ai_quota_state;
    at_now timestamptz;
    free_at timestamptz;
    candidate timestamptz;
begin
    granted := false;
    locked := google_ai_internal.lock_window(p_cand.quota_group, p_model.model, p_cfg);
    st := locked.st;
    at_now := locked.at_now;

    if st.cooldown_until > at_now then
        reason := 'cooldown';
        free_at := st.cooldown_until;
    end if;

    if p_cand.rpd is not null and st.day_requests + 1 > p_cand.rpd then
        candidate := google_ai_internal.next_day_start(at_now, p_cfg.rpd_time_zone);
        if free_at is null or candidate > free_at then
            reason := 'rpd';
            free_at := candidate;
        end if;
    end if;

    if p_cand.rpm is not null and st.window_requests + 1 > p_cand.rpm then
        -- The slot frees when the k-th oldest counted grant leaves the window.
        select r.granted_at + hold into candidate
        from public.google_ai_reservations as r
        where
            r.quota_group = p_cand.quota_group and r.model = p_model.model
            and r.granted_at > st.swept_to and r.counted_requests > 0
        order by r.granted_at
        offset greatest(st.window_requests - p_cand.rpm, 0) limit 1;
        candidate := coalesce(candidate, at_now + hold);
        if free_at is null or candidate > free_at then
            reason := 'rpm';
            free_at := candidate;
        end if;
    end if;

    if p_cand.tpm is not null and st.window_tokens + p_tokens > p_cand.tpm then
        -- Tokens free when enough of the oldest grants have left the window.
        select w.granted_at + hold into candidate
        from (
            select
                r.granted_at,
                sum(r.counted_tokens) over (order by r.granted_at, r.id) as freed
            from public.google_ai_reservations as r
            where
                r.quota_group = p_cand.quota_group and r.model = p_model.model
                and r.granted_at > st.swept_to and r.counted_tokens > 0
        ) as w
        where w.freed >= st.window_tokens + p_tokens - p_cand.tpm
        order by w.granted_at
        limit 1;
        candidate := coalesce(candidate, at_now + hold);
        if free_at is null or candidate > free_at then
            reason := 'tpm';
            free_at := candidate;
        end if;
    end if;

    if reason is not null then
        retry_after_ms := greatest(
            1, pg_catalog.ceil(extract(epoch from free_at - at_now) * 1000)
        )::integer;
        return;
    end if;

    insert into public.google_ai_reservations (
        key_alias, quota_group, model, api_model, estimated_tokens, counted_tokens,
        granted_at, rpd_day, lease_until, caller, request_id, waited_ms
    ) values (
        p_cand.key_alias, p_cand.quota_group, p_model.model,
        coalesce(p_model.api_model, p_model.model),
        p_tokens, p_tokens, at_now, st.rpd_day,
        at_now + pg_catalog.make_interval(secs => p_cfg.lease_ms / 1000.0),
        p_caller, p_request_id,
        -- acquire runs as one statement: its start is when the caller asked.
        greatest(0, pg_catalog.round(
            extract(epoch from pg_catalog.clock_timestamp() - pg_catalog.statement_timestamp())
            * 1000
        ))::integer
    )
    returning id into reservation_id;

    update public.google_ai_quota_state as s
    set
        window_requests = st.window_requests + 1,
        window_tokens = st.window_tokens + p_tokens,
        swept_to = st.swept_to,
        rpd_day = st.rpd_day,
        day_requests = st.day_requests + 1
    where s.quota_group = st.quota_group and s.model = st.model;
    granted := true;
end;
$$;

revoke all on function google_ai_internal.try_reserve(
    google_ai_internal.candidate, public.google_ai_model_limits, integer, text, text,
    public.google_ai_settings
) from public, anon, authenticated;

/*
 * record_acquire_verdict: record one acquire() verdict.
 *
 * A grant writes nothing here: its ledger row (written by try_reserve) is its
 * record. A refusal folds: when the newest google_ai_refusals row of the same
 * caller, model, key set (p_key_aliases, sorted; null = every key), reported
 * key and reason saw its last refusal at most refusal_fold_ms ago and began
 * less than one window ago, that row's count and last time move on (one HOT
 * update, locking only that row); otherwise a new row starts. Two callers
 * that start the same fold at the same instant may start two rows; every
 * refusal is still counted once.
 *
 * Parameters: the verdict, the resolved model, acquire's own arguments (mode
 * upper-cased), the number of reservation rounds, and the key set.
 * Returns nothing. Raises nothing of its own.
 * Example: perform google_ai_internal.record_acquire_verdict(
 *              verdict, 'gemma-3-27b', 1200, 'WAIT', 30000, 3, 'bot', 'msg-42',
 *              array['bot-key-1']);
 */
drop function google_ai_internal.record_acquire_verdict(
    public.acquire_result, text, integer, text, integer, integer, text, text
);

create function google_ai_internal.record_acquire_verdict(
    p_verdict public.acquire_result,
    p_model text,
    p_tokens integer,
    p_mode text,
    p_max_wait_ms integer,
    p_rounds integer,
    p_caller text,
    p_request_id text,
    p_key_aliases text [] default null
)
returns void
language plpgsql
volatile
set search_path = ''
set plan_cache_mode = force_generic_plan
as $$
declare
    cfg public.google_ai_settings;
    at_now timestamptz;
    wanted_set text [];
    fold bigint;
begin
    if p_verdict.granted then
        return;
    end if;
    cfg := google_ai_internal.settings();
    at_now := google_ai_internal.clock();
    if p_key_aliases is not null then
        wanted_set := array(
            select distinct a from pg_catalog.unnest(p_key_aliases) as a order by a
        );
    end if;
    -- %L quotes values and spells null as NULL: distinct tuples, distinct text.
    fold := pg_catalog.hashtextextended(pg_catalog.format(
        '%L %L %L %L %L', p_caller, p_model, wanted_set::text, p_verdict.key_alias, p_verdict.reason
    ), 0);

    if cfg.refusal_fold_ms > 0 then
        update public.google_ai_refusals as f
        set
            refusals = f.refusals + 1,
            last_at = greatest(f.last_at, at_now),
            retry_after_ms = p_verdict.retry_after_ms,
            waited_ms = greatest(f.waited_ms, p_verdict.waited_ms)
        where
            f.id = (
                select g.id
                from public.google_ai_refusals as g
                where
                    g.fold_key = fold
                    and g.first_at > at_now - pg_catalog.make_interval(
                        secs => cfg.window_ms / 1000.0
                    )
                order by g.first_at desc
                limit 1
            )
            and f.last_at >= at_now - pg_catalog.make_interval(secs => cfg.refusal_fold_ms / 1000.0)
            -- The hash picks the row; the values decide.
            and f.model = p_model
            and f.caller is not distinct from p_caller
            and f.key_set is not distinct from wanted_set
            and f.key_alias is not distinct from p_verdict.key_alias
            and f.reason is not distinct from p_verdict.reason;
        if found then
            return;
        end if;
    end if;

    insert into public.google_ai_refusals (
        fold_key, first_at, last_at, model, key_alias, key_set, reason, caller, request_id,
        mode, tokens, max_wait_ms, waited_ms, rounds, retry_after_ms
    ) values (
        fold, at_now, at_now, p_model, p_verdict.key_alias, wanted_set, p_verdict.reason,
        p_caller, p_request_id, p_mode, p_tokens, p_max_wait_ms, p_verdict.waited_ms,
        p_rounds, p_verdict.retry_after_ms
    );
end;
$$;

revoke all on function google_ai_internal.record_acquire_verdict(
    public.acquire_result, text, integer, text, integer, integer, text, text, text []
) from public, anon, authenticated;

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
 * audit_config_change: trigger that audits configuration changes as
 * config_changed records with old and new values, whoever made them. The
 * actor recorded is the caller's role, not the definer.
 * Trigger function; example: update public.google_ai_settings set lease_ms = 300000;
 */
create or replace function google_ai_internal.audit_config_change()
returns trigger
language plpgsql
security definer
set search_path = ''
as $$
declare
    old_row jsonb := case when tg_op <> 'INSERT' then pg_catalog.to_jsonb(old) end;
    new_row jsonb := case when tg_op <> 'DELETE' then pg_catalog.to_jsonb(new) end;
    row_now jsonb := coalesce(new_row, old_row);
begin
    if tg_op = 'UPDATE' and old_row = new_row then
        return new;
    end if;
    insert into public.google_ai_audit_records (ts, event, key_alias, model, actor, details)
    values (
        google_ai_internal.clock(),
        'config_changed',
        row_now ->> 'key_alias',
        row_now ->> 'model',
        case
            when pg_catalog.current_setting('role') = 'none' then session_user
            else pg_catalog.current_setting('role')
        end,
        pg_catalog.jsonb_build_object(
            'table', tg_table_name,
            'op', pg_catalog.lower(tg_op),
            'old', old_row,
            'new', new_row
        )
    );
    return coalesce(new, old);
end;
$$;

revoke all on function google_ai_internal.audit_config_change() from public, anon, authenticated;

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

/*
 * disable_key: take a key out of the pool (Google said API_KEY_INVALID, or
 * that the key leaked). Audited twice: `key_disabled` with the reason, and
 * `config_changed` by the table trigger.
 * Returns true when the key was active. Raises: LL009 unknown key, LL007.
 * Example: select public.disable_key('kaggle-2', 'API_KEY_INVALID');
 */
create or replace function public.disable_key(key_alias text, reason text default null)
returns boolean
language plpgsql
volatile
security definer
set search_path = ''
as $$
declare
    was_active boolean;
begin
    perform google_ai_internal.check_text('reason', reason, 500);
    select k.is_active is true into was_active
    from public.google_ai_api_keys as k
    where k.key_alias = disable_key.key_alias
    for update;
    if not found then
        raise exception using errcode = 'LL009',
            message = pg_catalog.format('unknown key %L', pg_catalog.left(key_alias, 200)),
            hint = 'See the aliases in public.google_ai_api_keys.';
    end if;
    update public.google_ai_api_keys as k
    set is_active = false, disabled_reason = coalesce(reason, 'disabled')
    where k.key_alias = disable_key.key_alias;
    insert into public.google_ai_audit_records (ts, event, key_alias, details)
    values (google_ai_internal.clock(), 'key_disabled', disable_key.key_alias,
            pg_catalog.jsonb_build_object('reason', reason, 'was_active', was_active));
    return was_active;
end;
$$;

comment on function public.disable_key(text, text) is
'Mark a key inactive (invalid or leaked) and audit why.';

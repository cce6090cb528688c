-- The RPC contract of llm-limits: acquire, commit_usage, release,
-- report_rate_limit and disable_key. Quota decisions are returned as rows;
-- only bad input raises, with the SQLSTATEs below (class LL).
--
--   LL001 unknown model            LL006 unknown reservation
--   LL002 invalid token count      LL007 invalid argument
--   LL003 request larger than TPM  LL008 reservation already settled otherwise
--   LL004 unknown mode             LL009 unknown key
--   LL005 invalid wait             LL010 audit log is append-only
--
-- LOCK ORDER (the only one; every function follows it):
--   acquire:    1. the advisory "waiter queue" lock of (model, candidate set),
--                  WAIT mode only;
--               2. one google_ai_quota_state row (group, model) at a time: a
--                  refused try on one of several candidates, or any WAIT try,
--                  runs in a subtransaction that is rolled back, releasing the
--                  row before the next candidate is locked or before sleeping.
--               It only inserts reservation rows, never waits on one.
--   settlement (commit_usage, release, report_rate_limit, run_maintenance):
--               1. the google_ai_reservations row; 2. its quota_state row.
-- Nothing waits on a reservation row while holding a window row, so there is
-- no cycle. No table locks. No row lock is held across pg_sleep.
--
-- PLANS: hot-path functions set plan_cache_mode = force_generic_plan. Their
-- parameterized filters ("aliases is null or alias = any(...)", time ranges)
-- otherwise make the plan cache re-plan on every call (~100-150 us each);
-- the generic plans use the same indexes.

create type public.acquire_result as (
    granted boolean,
    reservation_id uuid,
    key_alias text,
    env_var_name text,
    model text,
    waited_ms integer,
    reason text,
    retry_after_ms integer
);

comment on type public.acquire_result is
'Verdict of acquire(): a grant (reservation_id, key) or a refusal (reason, retry_after_ms).';

create function google_ai_internal.settings()
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

-- Resolve a caller's model name: the limits row name or the API id.
create function google_ai_internal.resolve_model(p_model text)
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

-- Require a text argument to be short and printable enough to audit.
create function google_ai_internal.check_text(p_name text, p_value text, p_max integer)
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

-- Create the (group, model) window row if it is missing, its totals rebuilt
-- from the ledger: the row is derived data, and both acquire and settlement
-- create it the same way, so whichever inserts first, the other's
-- `on conflict` waits for it and then sees consistent totals.
create function google_ai_internal.ensure_window(
    p_group text, p_model text, p_now timestamptz, p_hold interval, p_time_zone text
)
returns void
language plpgsql
volatile
set search_path = ''
as $$
begin
    insert into public.google_ai_quota_state as s (
        quota_group, model, window_requests, window_tokens, swept_to, rpd_day, day_requests
    )
    select
        p_group, p_model,
        coalesce(sum(r.counted_requests) filter (where r.granted_at > p_now - p_hold), 0),
        coalesce(sum(r.counted_tokens) filter (where r.granted_at > p_now - p_hold), 0),
        p_now - p_hold,
        (p_now at time zone p_time_zone)::date,
        coalesce(
            sum(r.counted_requests)
                filter (where r.rpd_day = (p_now at time zone p_time_zone)::date),
            0
        )
    from public.google_ai_reservations as r
    where r.quota_group = p_group and r.model = p_model
    on conflict (quota_group, model) do nothing;
end;
$$;

-- Lock the (group, model) window row, then read the clock (so grants on one
-- window are stamped in lock order), then bring the row up to date: subtract
-- the ledger rows that aged out of the window (+ guard) since the last sweep,
-- and roll the quota day. The caller writes the row back if it changes it.
create function google_ai_internal.lock_window(
    p_group text,
    p_model text,
    p_cfg public.google_ai_settings,
    out st public.google_ai_quota_state,
    out at_now timestamptz
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
    horizon timestamptz;
    today date;
    moved_requests bigint;
    moved_tokens bigint;
    direction integer;
begin
    select s.* into st
    from public.google_ai_quota_state as s
    where s.quota_group = p_group and s.model = p_model
    for update;
    if not found then
        perform google_ai_internal.ensure_window(
            p_group, p_model, google_ai_internal.clock(), hold, p_cfg.rpd_time_zone
        );
        select s.* into st
        from public.google_ai_quota_state as s
        where s.quota_group = p_group and s.model = p_model
        for update;
    end if;

    at_now := google_ai_internal.clock();
    horizon := at_now - hold;
    if horizon <> st.swept_to then
        -- Rows between the old and the new horizon leave the window (the usual
        -- case) or, if the window grew (window_ms or the guard was raised) or
        -- the clock stepped back, enter it again.
        select coalesce(sum(r.counted_requests), 0), coalesce(sum(r.counted_tokens), 0)
        into moved_requests, moved_tokens
        from public.google_ai_reservations as r
        where
            r.quota_group = p_group
            and r.model = p_model
            and r.granted_at > least(st.swept_to, horizon)
            and r.granted_at <= greatest(st.swept_to, horizon);
        direction := case when horizon > st.swept_to then -1 else 1 end;
        st.window_requests := st.window_requests + direction * moved_requests;
        st.window_tokens := st.window_tokens + direction * moved_tokens;
        st.swept_to := horizon;
    end if;

    today := (at_now at time zone p_cfg.rpd_time_zone)::date;
    if st.rpd_day is null or today > st.rpd_day then
        st.rpd_day := today;
        st.day_requests := 0;
    end if;
end;
$$;

-- The next midnight of the quota day, as Google resets RPD.
create function google_ai_internal.next_day_start(p_now timestamptz, p_time_zone text)
returns timestamptz
language plpgsql
stable
set search_path = ''
as $$
begin
    return ((p_now at time zone p_time_zone)::date + 1)::timestamp at time zone p_time_zone;
end;
$$;

-- A key group that may serve a request, with its effective limits (the group
-- override, else the model's).
create type google_ai_internal.candidate as (
    quota_group text,
    key_alias text,
    env_var_name text,
    priority integer,
    rpm integer,
    tpm integer,
    rpd integer
);

-- The keys that could ever serve `p_tokens`, best first: cooling-down groups
-- last, then by priority (lower first), then by most headroom (the tightest
-- remaining fraction of any limit, read without locks), then alias. A group
-- may appear once per key; reserve_round tries each group only once, on its
-- first (best) key.
create function google_ai_internal.candidates(
    p_model text, p_key_aliases text [], p_now timestamptz, p_tokens integer
)
returns setof google_ai_internal.candidate
language plpgsql
stable
set search_path = ''
set plan_cache_mode = force_generic_plan
as $$
begin
    return query
    select
        g.quota_group, k.key_alias, k.env_var_name, coalesce(k.priority, 100)::integer,
        coalesce(o.rpm, m.rpm::integer),
        coalesce(o.tpm, m.tpm::integer),
        coalesce(o.rpd, m.rpd::integer)
    from public.google_ai_api_keys as k
    cross join lateral (select coalesce(k.quota_group, k.key_alias) as quota_group) as g
    inner join public.google_ai_model_limits as m on m.model = p_model
    left join public.google_ai_group_limits as o
        on o.quota_group = g.quota_group and o.model = m.model
    left join public.google_ai_quota_state as s
        on s.quota_group = g.quota_group and s.model = m.model
    where
        k.is_active is true
        and (p_key_aliases is null or k.key_alias = any(p_key_aliases))
        -- A group whose TPM can never hold the request is no candidate (its
        -- retry_after would be a promise it cannot keep).
        and coalesce(o.tpm, m.tpm::integer, p_tokens) >= p_tokens
    order by
        (s.cooldown_until > p_now) is true,
        coalesce(k.priority, 100),
        least(
            1.0 - coalesce(s.window_requests, 0)::numeric / nullif(coalesce(o.rpm, m.rpm), 0),
            1.0 - coalesce(s.window_tokens, 0)::numeric / nullif(coalesce(o.tpm, m.tpm), 0),
            1.0 - coalesce(s.day_requests, 0)::numeric / nullif(coalesce(o.rpd, m.rpd), 0)
        ) desc nulls first,
        k.key_alias;
end;
$$;

-- One try on one candidate: lock its window, decide, and on success write
-- the reservation and the new totals. On refusal nothing is written.
-- retry_after_ms is the truthful earliest moment every binding dimension has
-- freed, computed from the ledger (a release can only make it sooner).
create function google_ai_internal.try_reserve(
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
        granted_at, rpd_day, lease_until, caller, request_id
    ) values (
        p_cand.key_alias, p_cand.quota_group, p_model.model,
        coalesce(p_model.api_model, p_model.model),
        p_tokens, p_tokens, at_now, st.rpd_day,
        at_now + pg_catalog.make_interval(secs => p_cfg.lease_ms / 1000.0),
        p_caller, p_request_id
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

-- One round over the candidates, best first. With several candidates, or
-- when the caller will sleep afterwards, each try is a subtransaction that is
-- rolled back on refusal, so its row lock is released before the next
-- candidate is locked (never two windows at once) and before any pg_sleep.
-- A single NO_WAIT try needs no subtransaction: it locks one row only.
create function google_ai_internal.reserve_round(
    p_model public.google_ai_model_limits,
    p_cands google_ai_internal.candidate [],
    p_tokens integer,
    p_caller text,
    p_request_id text,
    p_cfg public.google_ai_settings,
    p_release_on_refusal boolean
)
returns public.acquire_result
language plpgsql
volatile
set search_path = ''
as $$
declare
    verdict public.acquire_result;
    attempt record;
    cand google_ai_internal.candidate;
    tried text [] := '{}';
    guarded boolean := p_release_on_refusal or pg_catalog.cardinality(p_cands) > 1;
begin
    verdict.granted := false;
    verdict.model := coalesce(p_model.api_model, p_model.model);
    verdict.reason := 'no_key';
    foreach cand in array p_cands loop
        continue when cand.quota_group = any(tried);  -- keys of one group share its window
        tried := tried || cand.quota_group;
        if guarded then
            begin
                attempt := google_ai_internal.try_reserve(
                    cand, p_model, p_tokens, p_caller, p_request_id, p_cfg
                );
                if not attempt.granted then
                    raise exception using errcode = 'LL999';
                end if;
            exception when sqlstate 'LL999' then
                null;  -- rolled back: the window row is unlocked again
            end;
        else
            attempt := google_ai_internal.try_reserve(
                cand, p_model, p_tokens, p_caller, p_request_id, p_cfg
            );
        end if;
        if attempt.granted then
            verdict.granted := true;
            verdict.reservation_id := attempt.reservation_id;
            verdict.key_alias := cand.key_alias;
            verdict.env_var_name := cand.env_var_name;
            verdict.reason := null;
            verdict.retry_after_ms := null;
            return verdict;
        end if;
        -- Report the refusal that frees soonest: that is when to retry.
        if verdict.retry_after_ms is null or attempt.retry_after_ms < verdict.retry_after_ms then
            verdict.reason := attempt.reason;
            verdict.retry_after_ms := attempt.retry_after_ms;
            verdict.key_alias := cand.key_alias;
        end if;
    end loop;
    return verdict;
end;
$$;

/*
 * acquire: atomically reserve one request and `tokens` input tokens of
 * `model` on the best usable key.
 *
 * Parameters:
 *   model        limits row name or API id ('gemma-3-27b' or 'gemma-3-27b-it')
 *   tokens       estimated input tokens (an upper bound; commit_usage reconciles)
 *   mode         'NO_WAIT' (one attempt) or 'WAIT' (sleep until granted or max_wait_ms)
 *   max_wait_ms  WAIT budget, 0..google_ai_settings.max_wait_cap_ms (default cap 90 s)
 *   key_aliases  the keys this caller holds; null means every active key
 *   caller, request_id  free text for the audit log (<= 200 characters)
 *
 * Returns one acquire_result row. A refusal is a row with granted = false and
 * reason in (rpm, tpm, rpd, cooldown, no_key, wait_timeout), never an
 * exception, so its audit row is kept.
 *
 * Key choice: active keys in key_aliases, one per quota group (lowest
 * priority value, then alias), groups tried by priority, then by most
 * headroom; cooling-down groups last.
 *
 * WAIT: waiters of the same (model, candidate groups) form a FIFO queue on an
 * advisory lock; the lock manager hands it over in arrival order, so only the
 * head re-checks (every wait_recheck_ms at most, or exactly when the window
 * frees) and the rest sleep in the lock queue without polling.
 *
 * Raises: LL001 unknown model, LL002 bad tokens, LL003 tokens > TPM,
 *         LL004 unknown mode, LL005 bad max_wait_ms, LL007 text too long.
 * Example: select * from public.acquire('gemma-3-27b', 1200, 'WAIT', 30000,
 *                                       array['bot-key-1'], 'bot', 'msg-42');
 */
create function public.acquire(
    model text,
    tokens integer,
    mode text default 'NO_WAIT',
    max_wait_ms integer default 0,
    key_aliases text [] default null,
    caller text default null,
    request_id text default null
)
returns public.acquire_result
language plpgsql
volatile
security definer
set search_path = ''
set plan_cache_mode = force_generic_plan
as $$
declare
    cfg public.google_ai_settings := google_ai_internal.settings();
    started timestamptz := pg_catalog.clock_timestamp();
    wanted public.google_ai_model_limits;
    wait_mode boolean;
    deadline timestamptz;
    cands google_ai_internal.candidate [];
    verdict public.acquire_result;
    biggest_tpm integer;
    unlimited boolean;
    queue_model integer;
    queue_key integer;
    remaining_ms double precision;
    rounds integer := 0;
    queue_timed_out boolean := false;
    old_lock_timeout text;
begin
    -- Validate everything before touching any state.
    if acquire.model is null then
        raise exception using errcode = 'LL001', message = 'model must not be null',
            hint = 'Pass a model name such as gemma-3-27b.';
    end if;
    -- One cheap test on the hot path; check_text names the culprit.
    if greatest(
        pg_catalog.length(acquire.model), pg_catalog.length(caller), pg_catalog.length(request_id)
    ) > 200 then
        perform google_ai_internal.check_text('model', acquire.model, 200);
        perform google_ai_internal.check_text('caller', caller, 200);
        perform google_ai_internal.check_text('request_id', request_id, 200);
    end if;
    wanted := google_ai_internal.resolve_model(acquire.model);
    if tokens is null or tokens < 0 then
        raise exception using errcode = 'LL002',
            message = pg_catalog.format('tokens must be a non-negative integer, got %s',
                                        coalesce(tokens::text, 'null')),
            hint = 'Pass an upper-bound estimate of the input tokens.';
    end if;
    if mode is null or pg_catalog.upper(mode) not in ('WAIT', 'NO_WAIT') then
        raise exception using errcode = 'LL004',
            message = pg_catalog.format('unknown mode %L',
                                        pg_catalog.left(coalesce(mode, 'null'), 50)),
            hint = 'mode is WAIT or NO_WAIT.';
    end if;
    wait_mode := pg_catalog.upper(mode) = 'WAIT';
    if max_wait_ms is null or max_wait_ms < 0 or max_wait_ms > cfg.max_wait_cap_ms then
        raise exception using errcode = 'LL005',
            message = pg_catalog.format('max_wait_ms must be between 0 and %s, got %s',
                                        cfg.max_wait_cap_ms, coalesce(max_wait_ms::text, 'null')),
            detail = 'The cap keeps a WAIT under Supabase''s 2-minute statement timeout.',
            hint = 'Wait longer by calling acquire again.';
    end if;
    if key_aliases is not null and pg_catalog.cardinality(key_aliases) > 1000 then
        raise exception using errcode = 'LL007', message = 'key_aliases has more than 1000 entries',
            hint = 'Pass only the aliases this process holds.';
    end if;

    cands := array(
        select c
        from google_ai_internal.candidates(
            wanted.model, key_aliases, google_ai_internal.clock(), tokens
        ) as c
    );
    if pg_catalog.cardinality(cands) = 0 then
        -- No candidate: either no usable key (a refusal) or a request larger
        -- than every TPM that applies (bad input: it can never be granted).
        select
            coalesce(max(coalesce(o.tpm, wanted.tpm::integer)), wanted.tpm::integer),
            coalesce(bool_or(coalesce(o.tpm, wanted.tpm::integer) is null), wanted.tpm is null)
        into biggest_tpm, unlimited
        from public.google_ai_api_keys as k
        left join public.google_ai_group_limits as o
            on o.quota_group = coalesce(k.quota_group, k.key_alias) and o.model = wanted.model
        where k.is_active is true and (key_aliases is null or k.key_alias = any(key_aliases));
        if not unlimited and tokens > biggest_tpm then
            raise exception using errcode = 'LL003',
                message = pg_catalog.format(
                    '%s tokens can never fit: the largest TPM of %s is %s',
                    tokens, wanted.model, biggest_tpm
                ),
                hint = 'Split the prompt or raise the limit for a paid-tier group.';
        end if;
    end if;

    deadline := started + pg_catalog.make_interval(secs => max_wait_ms / 1000.0);
    wait_mode := wait_mode and max_wait_ms > 0;
    if wait_mode then
        -- Waiters form a FIFO per (model, candidate set): the lock manager
        -- hands this advisory lock over in arrival order, so only the head
        -- re-checks and the rest sleep in the lock queue without polling.
        -- The model half lets quota_status() count waiters per model.
        queue_model := pg_catalog.hashtext('llm_limits:' || wanted.model);
        queue_key := pg_catalog.hashtext(coalesce(pg_catalog.array_to_string(array(
            select distinct a from pg_catalog.unnest(key_aliases) as a order by a
        ), ','), '*'));
        if not pg_catalog.pg_try_advisory_xact_lock(queue_model, queue_key) then
            old_lock_timeout := pg_catalog.current_setting('lock_timeout');
            begin
                perform pg_catalog.set_config('lock_timeout', max_wait_ms::text || 'ms', true);
                perform pg_catalog.pg_advisory_xact_lock(queue_model, queue_key);
                perform pg_catalog.set_config('lock_timeout', old_lock_timeout, true);
            exception when lock_not_available then
                queue_timed_out := true;
            end;
            -- Keys may have changed while we queued.
            cands := array(
                select c
                from google_ai_internal.candidates(
                    wanted.model, key_aliases, google_ai_internal.clock(), tokens
                ) as c
            );
        end if;
    end if;

    loop
        rounds := rounds + 1;
        verdict := google_ai_internal.reserve_round(
            wanted, cands, tokens, caller, request_id, cfg, wait_mode
        );
        exit when verdict.granted or not wait_mode or verdict.reason = 'no_key' or queue_timed_out;
        remaining_ms := extract(epoch from deadline - pg_catalog.clock_timestamp()) * 1000;
        if remaining_ms <= 0 then
            verdict.reason := 'wait_timeout';
            exit;
        end if;
        -- Nothing but time frees a cooldown or a day: don't sit out a wait
        -- that cannot end in a grant.
        exit when verdict.reason in ('rpd', 'cooldown') and verdict.retry_after_ms > remaining_ms;
        -- Sleep until the window frees, but re-check every wait_recheck_ms to
        -- notice releases and reconciled commits.
        perform pg_catalog.pg_sleep(
            least(verdict.retry_after_ms, cfg.wait_recheck_ms, remaining_ms) / 1000.0
        );
        cands := array(
            select c
            from google_ai_internal.candidates(
                wanted.model, key_aliases, google_ai_internal.clock(), tokens
            ) as c
        );
    end loop;
    if queue_timed_out and not verdict.granted then
        verdict.reason := 'wait_timeout';
    end if;

    verdict.waited_ms := pg_catalog.round(
        extract(epoch from pg_catalog.clock_timestamp() - started) * 1000
    )::integer;

    insert into public.google_ai_audit_log (ts, event, key_alias, model, reservation_id, details)
    values (
        google_ai_internal.clock(),
        case when verdict.granted then 'granted' else 'refused' end,
        verdict.key_alias,
        wanted.model,
        verdict.reservation_id,
        pg_catalog.jsonb_strip_nulls(pg_catalog.jsonb_build_object(
            'tokens', tokens,
            'mode', pg_catalog.upper(mode),
            'max_wait_ms', max_wait_ms,
            'waited_ms', verdict.waited_ms,
            'rounds', rounds,
            'reason', verdict.reason,
            'retry_after_ms', verdict.retry_after_ms,
            'caller', caller,
            'request_id', request_id
        ))
    );
    return verdict;
end;
$$;

comment on function public.acquire(text, integer, text, integer, text [], text, text) is
'Reserve one request and `tokens` input tokens of a model on the best key (RPM/TPM over an exact sliding window, RPD per Pacific day). Returns a grant or a refusal row; raises only on bad input (LL001-LL007).';

-- What a notebook's batch runner (llm_limits.batch) asks the database,
-- besides the client RPCs it already calls through llm_limits.Client:
--
--   * batch_outlook: how much of a model's pool is left now and per day, to
--     show an ETA. Read every few seconds, never per item; it is built on
--     quota_status(), so usage is counted by one rule only.
--   * request_outcomes: after a killed run, whether Google may already have
--     answered a call whose answer never reached the checkpoint. The runner
--     writes an item's request_id to its checkpoint before the call; on
--     resume it asks here, so an item whose call never reached Google is
--     simply run, and one whose answer was lost is reported as such.
--
-- Both are granted to service_role here, and to the optional
-- llm_limits_client role by supabase/roles.sql (run it again after this
-- push), like the other client RPCs.

/*
 * batch_outlook: a model's pool as one batch sees it, summed over the quota
 * groups of the keys it may use.
 *
 * Parameters:
 *   model        limits row name or API id
 *   key_aliases  the keys the caller holds; null: every active key
 *   caller       whose recent calls give tokens_per_call; null: everyone's
 *
 * Returns one row. Limits are null when a group leaves that limit
 * unenforced; rpm_left and tpm_left are 0 for a group cooling down after a
 * 429. Columns: resolved_model (the limits row), groups, rpm_limit, rpm_left,
 * tpm_limit, tpm_left, rpd_limit, rpd_left, window_ms (what a grant holds
 * RPM and TPM for: window plus guard), cooldown_until (the latest cooldown
 * among the groups, null if none cools down), next_rpd_reset, waiters
 * (callers in a WAIT on this model), tokens_per_call (mean input tokens of
 * the caller's committed calls of this model over the live window; null
 * when there were none).
 * Raises: LL001 unknown model, LL007 caller longer than 200 characters.
 * Example: select * from public.batch_outlook('gemma-3-27b', array['kaggle-1'], 'festival-parser');
 */
create function public.batch_outlook(
    model text,
    key_aliases text [] default null,
    caller text default null
)
returns table (
    resolved_model text,
    groups integer,
    rpm_limit integer,
    rpm_left integer,
    tpm_limit bigint,
    tpm_left bigint,
    rpd_limit integer,
    rpd_left integer,
    window_ms integer,
    cooldown_until timestamptz,
    next_rpd_reset timestamptz,
    waiters integer,
    tokens_per_call integer
)
language plpgsql
stable
security definer
set search_path = ''
set jit = off
as $$
declare
    cfg public.google_ai_settings := google_ai_internal.settings();
    limits public.google_ai_model_limits;
    hold interval := google_ai_internal.window_hold(cfg);
    horizon timestamptz := google_ai_internal.clock() - hold;
begin
    perform google_ai_internal.check_text('caller', batch_outlook.caller, 200);
    limits := google_ai_internal.resolve_model(batch_outlook.model);
    return query
    with pools as (
        select q.*, q.cooldown_until is not null as cooling
        from public.quota_status() as q
        where
            q.model = limits.model
            and (batch_outlook.key_aliases is null or q.key_aliases && batch_outlook.key_aliases)
    )
    select
        limits.model,
        count(*)::integer,
        case when bool_or(p.rpm_limit is null) then null else sum(p.rpm_limit) end::integer,
        case
            when bool_or(p.rpm_limit is null) then null
            else sum(case when p.cooling then 0 else greatest(p.rpm_limit - p.rpm_used, 0) end)
        end::integer,
        case when bool_or(p.tpm_limit is null) then null else sum(p.tpm_limit) end::bigint,
        case
            when bool_or(p.tpm_limit is null) then null
            else sum(case when p.cooling then 0 else greatest(p.tpm_limit - p.tpm_used, 0) end)
        end::bigint,
        case when bool_or(p.rpd_limit is null) then null else sum(p.rpd_limit) end::integer,
        case
            when bool_or(p.rpd_limit is null) then null
            else sum(greatest(p.rpd_limit - p.rpd_used, 0))
        end::integer,
        (extract(epoch from hold) * 1000)::integer,
        max(p.cooldown_until),
        min(p.next_rpd_reset),
        coalesce(max(p.waiters), 0)::integer,
        (
            select pg_catalog.round(avg(r.counted_tokens))::integer
            from public.google_ai_reservations as r
            where
                r.model = limits.model
                and r.status = 'committed'
                and r.granted_at > horizon
                and (batch_outlook.caller is null or r.caller = batch_outlook.caller)
        )
    from pools as p;
end;
$$;

comment on function public.batch_outlook(text, text [], text) is
'A model''s pool as one batch sees it: RPM/TPM left in the window, RPD left today, the window, cooldowns, the next RPD reset, waiters and the caller''s mean input tokens per call.';

/*
 * request_outcomes: what became of the calls made under some request ids
 * (the client passes a call's request_id to every acquire of its attempts).
 *
 * Parameters: request_ids, at most 1000, each at most 200 characters.
 *
 * Returns one row per request id that has a grant in the ledger (ids with
 * none are absent: no call of theirs was granted, so none reached Google):
 *   request_id
 *   grants             grants made under it (one per attempt)
 *   committed          one of them was committed: Google answered
 *   may_have_answered  Google may have answered one of them: a grant was
 *                      committed, is still open, expired open, or was
 *                      released after it was sent. A 429 or a release before
 *                      sending means no answer existed.
 *   last_status        the status of its latest grant
 * Raises: LL007 more than 1000 ids, or an id longer than 200 characters.
 * Example: select * from public.request_outcomes(array['batch-3f2a-17', 'batch-3f2a-18']);
 */
create function public.request_outcomes(request_ids text [])
returns table (
    request_id text,
    grants integer,
    committed boolean,
    may_have_answered boolean,
    last_status text
)
language plpgsql
stable
security definer
set search_path = ''
as $$
begin
    if pg_catalog.cardinality(request_outcomes.request_ids) > 1000 then
        raise exception using errcode = 'LL007',
            message = pg_catalog.format('at most 1000 request ids at once, got %s',
                                        pg_catalog.cardinality(request_outcomes.request_ids)),
            hint = 'Ask in chunks of 1000.';
    end if;
    if exists (
        select from pg_catalog.unnest(request_outcomes.request_ids) as i (id)
        where pg_catalog.length(i.id) > 200
    ) then
        raise exception using errcode = 'LL007',
            message = 'a request id is longer than 200 characters',
            hint = 'Request ids are at most 200 characters, as acquire takes them.';
    end if;
    return query
    select
        r.request_id,
        count(*)::integer,
        bool_or(r.status = 'committed'),
        bool_or(
            r.status in ('reserved', 'committed', 'expired')
            or (r.status = 'released' and r.counted_requests > 0)
        ),
        (pg_catalog.array_agg(r.status order by r.granted_at desc))[1]
    from public.google_ai_reservations as r
    where r.request_id = any(request_outcomes.request_ids)
    group by r.request_id
    order by r.request_id;
end;
$$;

comment on function public.request_outcomes(text []) is
'Per request id: grants made, whether one was committed, and whether Google may have answered one (committed, open, expired, or released after sending).';

revoke all on function public.batch_outlook(text, text [], text) from public, anon, authenticated;
revoke all on function public.request_outcomes(text []) from public, anon, authenticated;
grant execute on function public.batch_outlook(text, text [], text) to service_role;
grant execute on function public.request_outcomes(text []) to service_role;


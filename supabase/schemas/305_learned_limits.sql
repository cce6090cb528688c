-- Learned limits: a 429's quotaValue compared with the table (limit_observed),
-- applied only downwards when learn_limits = 'apply'.

/*
 * observe_limits: compare the quotaValue of each violation of a 429 with the
 * limit configured for the reservation's quota group and model (the group's
 * override, else the model's). A difference is audited as limit_observed;
 * with learn_limits = 'apply' a lower observed value becomes the group's
 * override (audited as config_changed by the table's trigger too). Limits
 * are never raised: a higher quotaValue may belong to another tier.
 *
 * The dimension comes from the quotaId: PerDay is rpd, InputTokens is tpm,
 * Requests...PerMinute is rpm; other quotas are ignored.
 *
 * Parameters: p_res, the reservation; p_violations, quota_violation's list;
 * p_cfg, the settings.
 * Returns the number of limit_observed rows written. Raises nothing.
 * Example: select google_ai_internal.observe_limits(res, v.violations, cfg);
 */
create function google_ai_internal.observe_limits(
    p_res public.google_ai_reservations,
    p_violations jsonb,
    p_cfg public.google_ai_settings
)
returns integer
language plpgsql
volatile
set search_path = ''
as $$
declare
    seen record;
    written integer := 0;
    applied boolean;
begin
    if p_cfg.learn_limits = 'off' then
        return 0;
    end if;
    for seen in
        select distinct on (d.dimension)
            d.dimension, d.quota_id, d.observed,
            case d.dimension
                when 'rpm' then coalesce(o.rpm, m.rpm::integer)
                when 'tpm' then coalesce(o.tpm, m.tpm::integer)
                else coalesce(o.rpd, m.rpd::integer)
            end as configured
        from pg_catalog.jsonb_array_elements(p_violations) as v (value)
        cross join lateral (
            select
                case
                    when v.value ->> 'quotaId' like '%PerDay%' then 'rpd'
                    when v.value ->> 'quotaId' like '%InputTokens%' then 'tpm'
                    when v.value ->> 'quotaId' ~ 'Requests.*PerMinute' then 'rpm'
                end as dimension,
                v.value ->> 'quotaId' as quota_id,
                case
                    when v.value ->> 'quotaValue' ~ '^[0-9]{1,9}$'
                        then (v.value ->> 'quotaValue')::integer
                end as observed
        ) as d
        inner join public.google_ai_model_limits as m on m.model = p_res.model
        left join public.google_ai_group_limits as o
            on o.quota_group = p_res.quota_group and o.model = p_res.model
        where d.dimension is not null and d.observed is not null
        order by d.dimension, d.observed
    loop
        continue when seen.configured is not distinct from seen.observed;
        applied := p_cfg.learn_limits = 'apply'
            and (seen.configured is null or seen.observed < seen.configured);
        if applied then
            insert into public.google_ai_group_limits as g (quota_group, model, rpm, tpm, rpd)
            values (
                p_res.quota_group, p_res.model,
                case when seen.dimension = 'rpm' then seen.observed end,
                case when seen.dimension = 'tpm' then seen.observed end,
                case when seen.dimension = 'rpd' then seen.observed end
            )
            on conflict (quota_group, model) do update
            set
                rpm = case when seen.dimension = 'rpm' then seen.observed else g.rpm end,
                tpm = case when seen.dimension = 'tpm' then seen.observed else g.tpm end,
                rpd = case when seen.dimension = 'rpd' then seen.observed else g.rpd end;
        end if;
        perform google_ai_internal.audit('limit_observed', p_res, pg_catalog.jsonb_build_object(
            'quota_group', p_res.quota_group,
            'dimension', seen.dimension,
            'quota_id', seen.quota_id,
            'observed', seen.observed,
            'configured', seen.configured,
            'learn_limits', p_cfg.learn_limits,
            'applied', applied
        ));
        written := written + 1;
    end loop;
    return written;
end;
$$;

revoke all on function google_ai_internal.observe_limits(
    public.google_ai_reservations, jsonb, public.google_ai_settings
) from public, anon, authenticated;

/*
 * observed_limits: what 429s said the limits are, where that differs from the
 * table: per quota group, model and dimension, the latest observed value,
 * the configured one now, how often and when last seen, and whether it was
 * applied. From the audit stream (limit_observed), so it covers
 * audit_retention.
 *
 * Returns one row per (quota_group, model, dimension). Raises nothing.
 * Example: select * from public.observed_limits();
 */
create function public.observed_limits()
returns table (
    quota_group text,
    model text,
    dimension text,
    observed integer,
    configured integer,
    times_seen integer,
    last_seen timestamptz,
    applied boolean
)
language sql
stable
security definer
set search_path = ''
as $$
    select distinct on (a.details ->> 'quota_group', a.model, a.details ->> 'dimension')
        a.details ->> 'quota_group',
        a.model,
        a.details ->> 'dimension',
        (a.details ->> 'observed')::integer,
        case a.details ->> 'dimension'
            when 'rpm' then coalesce(o.rpm, m.rpm::integer)
            when 'tpm' then coalesce(o.tpm, m.tpm::integer)
            else coalesce(o.rpd, m.rpd::integer)
        end,
        (pg_catalog.count(*) over (
            partition by a.details ->> 'quota_group', a.model, a.details ->> 'dimension'
        ))::integer,
        a.ts,
        coalesce((a.details ->> 'applied')::boolean, false)
    from public.google_ai_audit_records as a
    left join public.google_ai_model_limits as m on m.model = a.model
    left join public.google_ai_group_limits as o
        on o.quota_group = a.details ->> 'quota_group' and o.model = a.model
    where a.event = 'limit_observed'
    order by a.details ->> 'quota_group', a.model, a.details ->> 'dimension', a.ts desc, a.id desc
$$;

comment on function public.observed_limits() is
'Limits Google reported in 429s (quotaValue) that differ from the table, latest per quota group, model and dimension, with the configured value now and whether learn_limits applied it.';

revoke all on function public.observed_limits() from public, anon, authenticated;
grant execute on function public.observed_limits() to service_role;

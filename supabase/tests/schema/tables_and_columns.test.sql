-- The five adopted tables and the quota machinery's own tables exist with the
-- columns the RPCs and the bot rely on.
begin;
select plan(17);

select has_table('public', 'google_ai_api_keys', 'adopted table google_ai_api_keys exists');
select columns_are(
    'public', 'google_ai_api_keys',
    array[
        'id', 'key_alias', 'env_var_name', 'is_active', 'priority', 'created_at', 'notes',
        'quota_group', 'disabled_reason', 'updated_at'
    ],
    'google_ai_api_keys has the legacy columns plus quota_group, disabled_reason, updated_at'
);
select ok(
    exists(
        select from pg_catalog.pg_index as i
        where
            i.indrelid = 'public.google_ai_api_keys'::regclass and i.indisunique
            and i.indkey::text = (
                select a.attnum::text from pg_catalog.pg_attribute as a
                where a.attrelid = 'public.google_ai_api_keys'::regclass and a.attname = 'key_alias'
            )
    ),
    'key_alias has a unique index'
);

select has_table('public', 'google_ai_model_limits', 'adopted table google_ai_model_limits exists');
select columns_are(
    'public', 'google_ai_model_limits',
    array['id', 'model', 'rpm', 'tpm', 'rpd', 'created_at', 'updated_at', 'api_model', 'token_counter'],
    'google_ai_model_limits has model, api_model, the three limits and the token counter'
);
select ok(
    exists(
        select from pg_catalog.pg_index as i
        where
            i.indrelid = 'public.google_ai_model_limits'::regclass and i.indisunique
            and i.indkey::text = (
                select a.attnum::text from pg_catalog.pg_attribute as a
                where a.attrelid = 'public.google_ai_model_limits'::regclass and a.attname = 'model'
            )
    ),
    'model has a unique index (google_ai_group_limits references it)'
);

select has_table('public', 'google_ai_usage_counters', 'adopted table google_ai_usage_counters exists');
select has_table('public', 'token_usage', 'adopted table token_usage exists');
select columns_are(
    'public', 'token_usage',
    array[
        'id', 'ts', 'model', 'prompt_tokens', 'completion_tokens', 'total_tokens', 'request_id',
        'meta'
    ],
    'token_usage keeps the llm_logger columns'
);
select has_table('public', 'google_ai_maintenance_log', 'adopted table google_ai_maintenance_log exists');

select has_table('public', 'google_ai_settings', 'google_ai_settings exists');
select results_eq(
    $$select s.window_ms, s.window_guard_ms, s.rpd_time_zone, s.default_cooldown_ms
      from public.google_ai_settings as s$$,
    $$values (60000, 1000, 'America/Los_Angeles'::text, 60000)$$,
    'google_ai_settings holds one row with the documented defaults'
);
select hasnt_column(
    'public', 'google_ai_settings', 'max_wait_cap_ms',
    'the unused max_wait_cap_ms is gone (20261206003000)'
);
select col_not_null(
    'google_ai_internal', 'wait_tickets', 'deadline',
    'every place in line has a deadline (20261206003000)'
);

select columns_are(
    'public', 'google_ai_group_limits',
    array['quota_group', 'model', 'rpm', 'tpm', 'rpd', 'updated_at'],
    'google_ai_group_limits: per (quota_group, model) overrides'
);

select bag_eq(
    $$select c.column_name::text from information_schema.columns as c
      where c.table_schema = 'public' and c.table_name = 'google_ai_reservations'
        and c.column_name in ('id', 'key_alias', 'quota_group', 'model', 'api_model', 'status',
                              'estimated_tokens', 'actual_tokens', 'counted_requests',
                              'counted_tokens', 'granted_at', 'rpd_day', 'lease_until')
      union all
      select c.column_name::text from information_schema.columns as c
      where c.table_schema = 'public' and c.table_name = 'google_ai_quota_state'
        and c.column_name in ('quota_group', 'model', 'window_requests', 'window_tokens',
                              'swept_to', 'rpd_day', 'day_requests', 'cooldown_until')$$,
    $$values ('id'), ('key_alias'), ('quota_group'), ('model'), ('api_model'), ('status'),
             ('estimated_tokens'), ('actual_tokens'), ('counted_requests'), ('counted_tokens'),
             ('granted_at'), ('rpd_day'), ('lease_until'),
             ('quota_group'), ('model'), ('window_requests'), ('window_tokens'), ('swept_to'),
             ('rpd_day'), ('day_requests'), ('cooldown_until')$$,
    'google_ai_reservations and google_ai_quota_state have their key columns'
);

select columns_are(
    'public', 'google_ai_audit_log',
    array['id', 'ts', 'event', 'key_alias', 'model', 'reservation_id', 'actor', 'details'],
    'google_ai_audit_log has event, key_alias, model, reservation_id and details'
);

select * from finish();
rollback;

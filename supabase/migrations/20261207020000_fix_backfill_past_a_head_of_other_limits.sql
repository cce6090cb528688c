-- A waiter behind the head of its WAIT line was served ahead of it when
-- the window had room for both by the waiter's limits; but a head of a
-- lower class (lifted by aging) is bound by its class's reserves and pacing
-- too, and each grant to the class above moved the pace it waited for. In
-- the aging policy run (six bots flooding, one batch waiter lifted to the
-- top) the bots took, one after another, every slot the batch headed the
-- line for as they freed, and its call waited one more hold: 6.1 s against
-- the aging bound of 4.4 s, in 3 of 25 runs. Within a paced class, or one
-- under the reserves of the classes above, a backfill moves the pace or
-- takes the share the head needs in the same way. Backfill is now
-- asked only within one class rank that nothing above binds, where the
-- room backfill_group counts is the head's own.

/*
 * try_backfill: one try for a waiter behind others, when backfill_group
 * says its request fits now without delaying the head (p_head) of its line:
 * reserve_round on that group only. backfill_group counts the room the
 * waiter's own limits leave, so it is asked only where those are the
 * head's: within one class rank, in a class that nothing above binds. Never
 * past a head of a better class (a class is not served while one above it
 * waits in its line), nor past one of a lower class (aging lifted it: its
 * class's reserves and pacing bind it, and each grant to the waiter's class
 * would move the pace it waits for, as it would in a paced class, so the
 * head would lose the slots it heads the line for).
 *
 * Parameters: p_head (the head's ticket id), the requests and tokens ahead,
 * the waiter's candidates, the model row, tokens, caller, request_id,
 * settings, policy and when its wait began.
 * Returns the verdict (granted = false, or null, when there is nothing to
 * backfill). Raises nothing.
 * Example: verdict := google_ai_internal.try_backfill(head, 2, 200, cands, m, 100, 'bot', 'r1', cfg,
 *                         pol, now());
 */
create or replace function google_ai_internal.try_backfill(
    p_head uuid,
    p_ahead integer,
    p_ahead_tokens bigint,
    p_cands google_ai_internal.candidate [],
    p_model public.google_ai_model_limits,
    p_tokens integer,
    p_caller text,
    p_request_id text,
    p_cfg public.google_ai_settings,
    p_policy google_ai_internal.caller_policy,
    p_waiting_since timestamptz
)
returns public.acquire_result
language plpgsql
volatile
set search_path = ''
as $$
declare
    head google_ai_internal.wait_tickets;
    fits_in text;
begin
    select t.* into head from google_ai_internal.wait_tickets as t where t.id = p_head;
    if head.priority is distinct from p_policy.priority or coalesce(p_policy.paced, false)
        or coalesce(pg_catalog.cardinality(p_policy.higher_classes), 0) > 0 then
        return null;
    end if;
    fits_in := google_ai_internal.backfill_group(
        head, p_ahead, p_ahead_tokens, p_tokens, p_cands, p_model.model, p_cfg, google_ai_internal.clock()
    );
    if fits_in is null then
        return null;
    end if;
    return google_ai_internal.reserve_round(
        p_model, array(select c from pg_catalog.unnest(p_cands) as c where c.quota_group = fits_in),
        p_tokens, p_caller, p_request_id, p_cfg, true, p_policy, p_waiting_since
    );
end;
$$;

revoke all on function google_ai_internal.try_backfill(
    uuid, integer, bigint, google_ai_internal.candidate [], public.google_ai_model_limits,
    integer, text, text, public.google_ai_settings, google_ai_internal.caller_policy, timestamptz
) from public, anon, authenticated;

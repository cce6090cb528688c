-- The WAIT queues are no longer first in, first out: a queue is served by
-- class priority, then aging, then arrival (supabase/schemas/240_wait_queue.sql).
-- The table's comment says so, as in supabase/schemas/140_table_wait_tickets.sql.

comment on table google_ai_internal.wait_tickets is
'Places in the WAIT queues of acquire(), one queue per (model, key set), served by class priority, then aging (a starving class first), then seq (arrival); alive until alive_until.';

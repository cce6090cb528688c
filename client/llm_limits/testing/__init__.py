"""Test and benchmark equipment, apart from the thin client and the operator CLI (neither
imports it; the local stack they run on is ``llm_limits.local``).

* ``pooler``: PgBouncer in transaction mode in front of a local cluster;
* ``policy_load``, ``outage_load``: the loads ``tests/`` and ``make bench`` share;
* ``schemas``: builds a database from ``supabase/schemas`` and compares catalogs object by object.
"""

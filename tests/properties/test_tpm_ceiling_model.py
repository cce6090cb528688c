"""bench.tpm_ceiling's model of a TPM line: the rules keep their order of merit, and with
requests of one size there is nothing to reorder."""

from __future__ import annotations

from bench.tpm_ceiling import RULES, Setting, backfill, ceilings, share


def test_rules_rank_in_order_then_backfill_then_best_fit() -> None:
    found = ceilings(range(1_500, 6_501), Setting(), seconds=1_000.0, seeds=2)
    assert found["in order"] < found["backfill"] < found["best fit"] <= 1.0, found


def test_one_size_gives_every_rule_the_same_share() -> None:
    # 5 requests of 3,000 fill 15,000 exactly: each window grants all five at once.
    shares = {name: share(rule, [3_000], Setting(), 500.0, 0) for name, rule in RULES.items()}
    assert len(set(shares.values())) == 1, shares
    assert 0.95 <= shares["in order"] <= 10 / 10.3 + 0.01, shares


def test_backfill_takes_a_waiter_only_when_the_head_is_not_delayed() -> None:
    # The window holds 9,000 granted at t=0 and 4,000 at t=1; 2,000 tokens are free.
    window = [(0.0, 9_000), (1.0, 4_000)]
    # The head (5,000) fits when the 9,000 leave at 10.3 s, which frees enough for both.
    assert backfill([5_000, 2_000], window, 10.3, 2_000) == 1
    # A head of 11,000 fits at 10.3 s; with 2,000 more it would wait for the 4,000 (11.3 s).
    assert backfill([11_000, 2_000], window, 10.3, 2_000) is None

"""TP-01 across DDP ranks and TP-04 (clip_grad_norm_ over FSDP2 shards) on a real process group:
gloo ranks on this machine (the ``ranks`` fixture), or a job launched with torchrun or srun
(``--ranks-results``). The experiments run on the ranks (trainclaims.families.tp.data_parallel,
trainclaims.checks' rank functions); these tests judge what they return."""

from __future__ import annotations

import pytest
import torch

from trainclaims import checks
from trainclaims.claims import Verdict
from trainclaims.families import tp
from trainclaims.families.tp import data_parallel as dp
from trainclaims.modes import get
from trainclaims.ranks import RankFailed

# each test starts (or reads) a process group: seconds, not milliseconds
pytestmark = [pytest.mark.distributed, pytest.mark.slow]


@pytest.mark.claim("TP-01")
def test_ddp_with_the_global_token_count_takes_one_processs_steps(numerics, ranks, evidence):
    results = ranks(dp.token_experiment("global", numerics))
    # the broken side, each rank's own count, is run (and judged beyond the bound) in the reference mode
    broken = ranks(dp.token_experiment("local", get("ieee"))) if numerics.reference else None
    checks.ranks.ddp_token_verdict(results, broken=broken).judge(evidence)


@pytest.mark.claim("TP-01")
def test_ddp_with_each_ranks_own_token_count_does_not(ranks, evidence):
    result = checks.ranks.ddp_token_verdict(ranks(dp.token_experiment("local", get("ieee"))))
    evidence.record(local_count_gap=result.gap, tokens=result.values["tokens_per_rank_and_step"])
    assert result.gap > tp.MEAN_OVER_K_MIN_GAP, result


def _fsdp_results(ranks, clip: str, numerics, evidence) -> list[dict]:
    """The ranks' results, or a skip where this torch cannot run FSDP2 on CPU as the family's table
    says (no fully_shard; a first forward that raises): where the table says it can, the error fails,
    and where it says it cannot, a run that worked fails too (an unknown change). On a torch the
    table has no measurement for, a run that worked is judged as it is, and one that could not run
    is not measured, saying so."""
    table = tp.FSDP2_ON_CPU
    try:
        results = ranks(dp.clip_experiment(clip, numerics))
    except RankFailed as err:
        if "record_event" not in str(err):
            raise
        table.record(evidence, False)
        if table.check(False):  # raises NotMeasured where the table has no measurement for this torch
            raise
        pytest.skip(f"{table.what}: not on torch {torch.__version__} ({table.range_for().source})")
    unsupported = results[0].get("unsupported")
    table.record(evidence, not unsupported)
    if table.range_for() is None and not unsupported:
        return results  # no measurement for this torch: the claim is measured all the same
    problem = table.check(not unsupported)
    if unsupported and problem is None:
        pytest.skip(f"{unsupported} ({table.range_for().source})")
    assert problem is None, f"{problem}: {unsupported or 'it ran'}"
    return results


@pytest.mark.claim("TP-04")
def test_clip_grad_norm_over_fsdp2_shards_returns_the_global_norm(numerics, ranks, evidence):
    result = checks.ranks.fsdp_clip_norm_verdict(_fsdp_results(ranks, "clip_grad_norm_", numerics, evidence))
    table = tp.FSDP2_CLIP_GLOBAL_NORM
    if not result.unmeasured:
        table.record(evidence, result.holds)
    if table.range_for() is not None and table.expected() is False:  # a torch line where it returns another norm
        evidence.record(**result.numbers())
        assert table.check(result.holds) is None, table.check(result.holds)
        evidence.conclude(Verdict.REFUTED, f"{result} ({table.range_for().source})")
        return
    result.judge(evidence)  # the broken side, each rank's own shards' norm, is judged beyond the bound

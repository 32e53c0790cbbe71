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
from trainclaims.ranks import RankFailed

# each test starts (or reads) a process group: seconds, not milliseconds
pytestmark = [pytest.mark.distributed, pytest.mark.slow]


@pytest.mark.claim("TP-01")
def test_ddp_with_the_global_token_count_takes_one_processs_steps(numerics, ranks, evidence):
    results = ranks(dp.token_experiment("global", numerics))
    checks.ddp_token_verdict(results).judge(evidence)


@pytest.mark.claim("TP-01")
def test_ddp_with_each_ranks_own_token_count_does_not(ranks, evidence):
    result = checks.ddp_token_verdict(ranks(dp.token_experiment("local", "ieee")))
    evidence.record(local_count_gap=result.gap, tokens=result.values["tokens_per_rank_and_step"])
    assert result.gap > tp.MEAN_OVER_K_MIN_GAP, result


def _fsdp_results(ranks, clip: str, numerics) -> list[dict]:
    """The ranks' results, or a skip where this torch cannot run FSDP2 on CPU as the family's table
    says (no fully_shard; a first forward that raises): where the table says it can, the error fails,
    and where it says it cannot, a run that worked fails too (an unknown change)."""
    table = tp.FSDP2_ON_CPU
    try:
        results = ranks(dp.clip_experiment(clip, numerics))
    except RankFailed as err:
        if table.expected() or "record_event" not in str(err):
            raise
        pytest.skip(f"{table.what}: not on torch {torch.__version__} ({table.range_for().source})")
    unsupported = results[0].get("unsupported")
    if unsupported and not table.expected():
        pytest.skip(f"{unsupported} ({table.range_for().source})")
    problem = table.check(not unsupported)
    assert problem is None, f"{problem}: {unsupported or 'it ran'}"
    return results


@pytest.mark.claim("TP-04")
def test_clip_grad_norm_over_fsdp2_shards_returns_the_global_norm(numerics, ranks, evidence):
    result = checks.fsdp_clip_norm_verdict(_fsdp_results(ranks, "clip_grad_norm_", numerics))
    table = tp.FSDP2_CLIP_GLOBAL_NORM
    if table.expected() is False:  # a torch line where it returns another norm, as measured
        evidence.record(**result.numbers())
        assert table.check(result.holds) is None, table.check(result.holds)
        evidence.conclude(Verdict.REFUTED, f"{result} ({table.range_for().source})")
        return
    result.judge(evidence)


@pytest.mark.claim("TP-04")
def test_a_clip_by_the_ranks_own_shards_misses_the_global_norm(ranks, evidence):
    result = checks.fsdp_clip_norm_verdict(_fsdp_results(ranks, "local shards", "ieee"))
    gaps = [abs(n / result.values["one_process_norm"] - 1) for n in result.values["norms"]]
    evidence.record(local_norm_gaps=gaps)
    assert min(gaps) > tp.LOCAL_SHARD_MIN_GAP, result

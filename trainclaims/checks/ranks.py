"""The data-parallel checks' two halves, for a launcher of your own (torchrun, Slurm): each rank
function trains both sides of a claim on one rank of a process group and returns plain data (JSON:
a launched job writes it), and each verdict judges the ranks' results. ``trainclaims.launch`` runs
the families' rank experiments this way; the checks in :mod:`trainclaims.checks` spawn gloo ranks
on this machine and call both. Every rank function takes ``(rank, world, *, ...)``: its settings
by keyword only."""

from trainclaims.checks.clipping import fsdp_clip_norm_rank, fsdp_clip_norm_verdict
from trainclaims.checks.data_parallel import (
    ddp_batchnorm_rank,
    ddp_batchnorm_verdict,
    ddp_rank,
    ddp_verdict,
    needs_ranks,
    no_sync_but_last,
)
from trainclaims.checks.tokens import ddp_token_rank, ddp_token_verdict
from trainclaims.ranks import with_keywords

__all__ = [
    "ddp_batchnorm_rank",
    "ddp_batchnorm_verdict",
    "ddp_rank",
    "ddp_token_rank",
    "ddp_token_verdict",
    "ddp_verdict",
    "fsdp_clip_norm_rank",
    "fsdp_clip_norm_verdict",
    "needs_ranks",
    "no_sync_but_last",
    "with_keywords",
]

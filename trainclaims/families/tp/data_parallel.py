"""TP-01's and TP-04's data-parallel experiments: each ``fn(rank, world, ...)`` on a real process
group (spawned by the test on the loopback with gloo, or run by a launcher: trainclaims.launch),
returning plain data for the tests to judge. They are trainclaims.checks' rank functions
(``ddp_token_rank``, ``fsdp_clip_norm_rank``) on the family's models: the checks users run on
their own."""

from __future__ import annotations

import functools

import torch
from torch import nn

from trainclaims.checks import ranks
from trainclaims.checks.clipping import clip_grad_norm
from trainclaims.families.tp.lm import batches, lm
from trainclaims.modes import Mode, ModeLike, get
from trainclaims.ranks import Experiment

SEED = 0
TOKEN_MICRO_BATCHES = 2  # per rank, under no_sync
CLIP_MAX_NORM = 0.1  # below every gradient norm of the MLP's first step: every rank clips
COUNTS = ("global", "local")


def clip_mlp(seed: int = SEED) -> nn.Sequential:
    """MLP 16-64-64-4 (each Linear a child FSDP2 shards)."""
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(16, 64), nn.ReLU(), nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 4))


def clip_batch(seed: int = SEED, n: int = 16) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, 16, generator=g), torch.randint(4, (n,), generator=g)


CLIPS = {"clip_grad_norm_": clip_grad_norm}  # the clip under test (the broken side: each rank's own shards' norm)


def token_rank(rank: int, world: int, count: str, seed: int, numerics: str, device: str = "cpu") -> dict:
    """TP-01 across ranks: :func:`trainclaims.checks.ranks.ddp_token_rank` on the tiny LM (the
    mode by name: an experiment's arguments are plain data)."""
    return ranks.ddp_token_rank(
        rank,
        world,
        model_fn=lm(seed),
        batches=batches(seed),
        k=TOKEN_MICRO_BATCHES,
        count=count,
        device=device,
        numerics=get(numerics),
    )


def clip_rank(rank: int, world: int, clip: str, seed: int, numerics: str, device: str = "cpu") -> dict:
    """TP-04: :func:`trainclaims.checks.ranks.fsdp_clip_norm_rank` on the MLP, with ``clip`` (a name
    of :data:`CLIPS`), or ``{"unsupported": why}`` where this torch has no FSDP2."""
    return ranks.fsdp_clip_norm_rank(
        rank,
        world,
        model_fn=functools.partial(clip_mlp, seed),
        batches=[clip_batch(seed)],
        max_norm=CLIP_MAX_NORM,
        clip_fn=CLIPS[clip],
        device=device,
        numerics=get(numerics),
    )


def token_experiment(count: str, mode: Mode) -> Experiment:
    return Experiment(f"TP-01/ddp_tokens/{count}/{mode}", token_rank, (count, SEED, mode.name), mode)


def clip_experiment(clip: str, mode: Mode) -> Experiment:
    return Experiment(f"TP-04/fsdp_clip/{clip}/{mode}", clip_rank, (clip, SEED, mode.name), mode)


def plan(modes: tuple[ModeLike, ...], device: str = "cpu") -> list[Experiment]:
    """Every rank experiment of TP-01's and TP-04's tests in these modes (the broken variants in
    the reference mode only, as the tests make them)."""
    out = []
    for mode in map(get, modes):  # a launcher gives Modes; a name is parsed here
        out += [token_experiment(count, mode) for count in COUNTS if mode.reference or count == "global"]
        out += [clip_experiment(clip, mode) for clip in CLIPS]
    return out

"""This project's claim family: the claims its tests encode (`pytest --claims` lists them), and
what it adds to `trainclaims-compare --family conftest:FAMILY` (each check's gap per run)."""

import pytest

from trainclaims.claims import Family


def compare_gaps(runs):
    """trainclaims-compare's section for this family: the gap each check measured, per run."""
    from trainclaims.compare import cell, run_columns

    rows = {}
    for i, run in enumerate(runs):
        for claim in run.claims:
            for t in claim.tests:
                if claim.key.startswith("CNN-") and t.outcome == "passed" and "gap" in t.evidence:
                    case = t.test.partition("[")[2].rstrip("]")  # the parameters, where the test has them
                    name = f"{claim.key} {t.evidence['check']}" + (f" [{case}]" if case else "")
                    rows.setdefault(name, ["-"] * len(runs))[i] = f"{t.evidence['gap']:.3g}"
    if not rows:
        return []
    lines = ["## CNN: the gap each check measured", "", "| claim, check | " + run_columns(runs) + " |"]
    lines.append("|---|" + "---|" * len(runs))
    lines += [f"| {cell(name)} | " + " | ".join(gaps) + " |" for name, gaps in rows.items()]
    return [*lines, ""]


FAMILY = Family(
    id="CNN",
    title="Training our small CNN",
    catalogue="""
CNN-01 | Accumulating 4 micro-batches with loss/4 trains the CNN (without BatchNorm) as batches 4 times larger.
CNN-02 | With BatchNorm, k micro-batches give another gradient than the k-times batch; running stats take k updates.
CNN-03 | In eval the CNN's BatchNorm uses its running statistics: a prediction does not depend on its batch.
CNN-04 | Eval-mode predictions are deterministic although the CNN has Dropout.
CNN-05 | DDP on 2 gloo ranks trains the CNN (no BatchNorm) as one process on the whole batch, also under no_sync.
CNN-06 | Inputs x255 with the first layer's W/255, lr/255^2 and weight decay x255^2 train the CNN as inputs in [0, 1].
CNN-07 | With BatchNorm, DDP ranks normalize with their own shard: the gradient differs from one process's on the batch.
CNN-08 | BatchNorm's running statistics are the EMA (momentum 0.1) of the batch mean and the unbiased batch variance.
""",
    compare_sections=(compare_gaps,),
)


@pytest.hookimpl(optionalhook=True)
def pytest_trainclaims_families():
    return [FAMILY]

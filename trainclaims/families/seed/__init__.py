"""The seed experiments' engine, shared by the seed families S000-S002: a training config and the
engine that trains it (:mod:`.engine`: one run; :mod:`.batched`: several variants at once;
:mod:`.side_by_side`: in threads; :mod:`.runs`: the session's cache of runs), the data tiers
(:mod:`.data`: synthetic, Fashion-MNIST, CIFAR-10, as tensors on the device), the seed nets
(:mod:`.nets`, :mod:`.models`), and the pytest plugin its tests need (:mod:`.plugin`: the
``tier``, ``data``, ``data_store`` and ``trainer`` fixtures, registered by the families that name
it). Nothing in the core uses it."""

PLUGIN = "trainclaims.families.seed.plugin"  # what a family that trains through the engine names (Family.plugin)
TRAINING_RUNS = "training_runs"  # ReportContext.extra's key: {(TrainConfig, data set, device): TrainResult}

"""The data tiers by name (no torch here: the report readers use the names without importing it).
What each tier is, and where its data comes from, is in :mod:`trainclaims.families.seed.data`."""

TIERS = ("synthetic", "fashion-mnist", "cifar10")

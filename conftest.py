"""Root conftest: thin on purpose. Options, markers, hooks and fixtures live in ``fixtures/``."""

pytest_plugins = ["fixtures.plugin"]

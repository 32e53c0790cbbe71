"""Root conftest: thin on purpose. The plugin (options, markers, fixtures, reports) is the installed
package's ``pytest11`` entry point (``fixtures/plugin.py``, imported as ``trainclaims.fixtures``);
this file registers nothing and only says how to install it where it is missing."""

import pytest


def pytest_configure(config: pytest.Config) -> None:
    if not config.pluginmanager.has_plugin("trainclaims"):
        raise pytest.UsageError(
            "the trainclaims plugin is not loaded: install the project into this Python with "
            "`pip install -e . -c constraints.txt` (or drop -p no:trainclaims)"
        )

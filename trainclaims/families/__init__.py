"""The claim families shipped with trainclaims. Each module is a pytest plugin (a ``pytest11`` entry
point) that answers ``pytest_trainclaims_families`` with its :class:`trainclaims.claims.Family`:
its claims, and the report parts (plots) that draw what a run measured for them."""

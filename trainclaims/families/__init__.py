"""The claim families shipped with trainclaims, one package each (its :class:`trainclaims.claims.Family`:
claims, bands, experiments, report parts and compare sections), and the seed documents' nets
(:mod:`.nets`). Each is registered through the ``trainclaims.families`` entry-point group
(``pyproject.toml``), which the core reads through :mod:`trainclaims.registry`: no core module
imports a family. A run reports the families whose tests it collected (the ini setting
``trainclaims_families`` chooses others).
"""

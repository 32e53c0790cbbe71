"""trainclaims: the library under the claim suites (devices, data, models, training engines, the
claim catalogue, reports, gates). The pytest wiring is ``trainclaims.fixtures`` (the folder
``fixtures/``); each claim family is in ``trainclaims.families``."""

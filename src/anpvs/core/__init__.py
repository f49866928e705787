"""Foundations: error types and exit codes (:mod:`.errors`), the plug-in registries (:mod:`.registry`), the typed
config (:mod:`.config`), device, precision and seeding (:mod:`.device`), signals as exceptions (:mod:`.signals`) and
``torchrun`` data parallelism (:mod:`.distributed`). Nothing here imports a higher layer (tests/test_layers.py); the
package imports nothing itself, so ``anpvs --version`` reads :mod:`.errors` without torch."""

"""The package version, in a module of its own so that any module (and ``anpvs --version``) can read it
without importing the package root, which imports the models and torch."""

__version__ = "0.1.0"

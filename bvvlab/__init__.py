"""bvvlab: a workbench for transformer LMs whose token embeddings are frozen glyph pictures.

After A. Bochkov, arXiv 2507.04886 and 2507.07129. See README.md and docs/
"""

__version__ = "0.1.0"

# The floors of the house, bottom up (docs/architecture.md): a module imports only from its own
# package and the packages before it here, with no circle (tests/test_imports.py checks it).
FLOORS = ("core", "corpus", "glyph", "models", "train", "eval", "analysis", "app", "cli")

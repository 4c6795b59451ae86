"""bvvlab: a workbench for transformer LMs whose token embeddings are frozen glyph pictures.

After A. Bochkov, arXiv 2507.04886 and 2507.07129. See README.md and docs/
"""

__version__ = "0.1.0"

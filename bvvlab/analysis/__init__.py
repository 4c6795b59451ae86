"""bvvlab.analysis."""

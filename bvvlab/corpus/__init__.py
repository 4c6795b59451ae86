"""bvvlab.corpus."""

"""bvvlab.core."""

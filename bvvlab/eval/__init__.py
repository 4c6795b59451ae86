"""bvvlab.eval."""

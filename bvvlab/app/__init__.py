"""bvvlab.app."""

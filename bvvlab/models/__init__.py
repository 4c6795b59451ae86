"""bvvlab.models."""

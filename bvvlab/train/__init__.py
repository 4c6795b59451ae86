"""bvvlab.train.loop."""

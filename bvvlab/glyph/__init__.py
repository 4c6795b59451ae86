"""bvvlab.glyph."""

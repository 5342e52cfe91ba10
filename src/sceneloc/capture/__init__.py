"""Your own data: COLMAP models, SfM on unposed images, the capture check."""

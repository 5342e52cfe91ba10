"""The scene surface fused from the mapping depth (cloud, ICP) and its rendered grey view (alignment)."""

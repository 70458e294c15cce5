"""Per-object data: meshes, skeletons and per-segment attributes (headless)."""

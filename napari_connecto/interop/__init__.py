"""Interop with other tools: Neuroglancer states and URLs (headless)."""

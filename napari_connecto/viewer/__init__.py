"""napari glue: turning sources into layers, launching and navigating viewers."""

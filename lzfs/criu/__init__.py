"""Reading CRIU images (for reports; the filesystem itself treats images as opaque bytes)."""

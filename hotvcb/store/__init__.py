"""Where backups live: folder layout, manifest, lock, rotation."""

"""GNS3: appliance files (written, checked, read)."""

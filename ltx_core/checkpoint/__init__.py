"""Weight files: version detection and the strict build of the official single file, the diffusers folder, key maps, and writing the single file."""

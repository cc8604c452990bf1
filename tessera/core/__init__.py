"""The bottom layer: strict JSON configs, strict safetensors save/load, atomic writes, the version.
It imports nothing from the rest of the project."""

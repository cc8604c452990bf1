"""``tessera.captioner``: the image-to-text captioner. Installed under the ``tessera`` namespace only."""

if __name__ != "tessera.captioner":  # e.g. `import captioner` from a checkout's root
    raise ImportError(f"this folder is the package tessera.captioner; import it as tessera.captioner, not {__name__}")

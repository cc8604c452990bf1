"""``tessera.pipelines``: the pipelines, data layer, tokenized datasets, training and commands. Installed under the ``tessera`` namespace only."""

if __name__ != "tessera.pipelines":  # e.g. `import pipelines` from a checkout's root
    raise ImportError(f"this folder is the package tessera.pipelines; import it as tessera.pipelines, not {__name__}")

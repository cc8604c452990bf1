"""``tessera.prior``: the text-conditioned priors over code grids. Installed under the ``tessera`` namespace only."""

if __name__ != "tessera.prior":  # e.g. `import prior` from a checkout's root
    raise ImportError(f"this folder is the package tessera.prior; import it as tessera.prior, not {__name__}")

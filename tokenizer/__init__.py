"""``tessera.tokenizer``: the VQ-GAN image tokenizer. Installed under the ``tessera`` namespace only."""

if __name__ != "tessera.tokenizer":  # e.g. `import tokenizer` from a checkout's root
    raise ImportError(f"this folder is the package tessera.tokenizer; import it as tessera.tokenizer, not {__name__}")

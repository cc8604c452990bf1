"""``python -m tessera.pipelines.cli``: the ``tessera`` command."""

from tessera.pipelines.cli.command import main

raise SystemExit(main())

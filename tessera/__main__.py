"""``python -m tessera``: the ``tessera`` command."""

from tessera.pipelines.cli import main

raise SystemExit(main())

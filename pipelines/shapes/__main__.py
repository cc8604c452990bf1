"""``python -m tessera.pipelines.shapes OUT_DIR --num_images N``: draw a folder of captioned shapes images."""

from tessera.pipelines.shapes.dataset import main

raise SystemExit(main())

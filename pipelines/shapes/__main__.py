"""``python -m pipelines.shapes OUT_DIR --num_images N``: draw a folder of captioned shapes images."""

from pipelines.shapes.dataset import main

raise SystemExit(main())

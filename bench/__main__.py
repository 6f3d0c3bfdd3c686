"""``python -m bench``: run the suite and write bench/results/latest.md."""

from bench.run import main

raise SystemExit(main())

"""``python -m companion.ops.serving``: the service's command line
(:mod:`~companion.ops.serving.cli`)."""

from companion.ops.serving.cli import main

if __name__ == "__main__":
    raise SystemExit(main())

"""The tracking command: upload what a run saved while its MLflow store was unreachable.

    python -m functional_ast.cli.tracking replay DIR [--tracking-uri URI]

DIR is a run's `tracking-unsent/` folder (beside its checkpoints); the data goes into the run it was meant for (or
a new one where that run was never created). Exit code 0 when uploaded, 1 when not (the folder is kept).
"""

from __future__ import annotations

import argparse
import sys

from functional_ast.edges.replay import replay

PROG = "python -m functional_ast.cli.tracking"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog=PROG, description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    rp = sub.add_parser("replay", help="upload tracking data saved while the store was unreachable")
    rp.add_argument("folder")
    rp.add_argument("--tracking-uri", default=None)
    args = parser.parse_args(argv)
    try:
        run_id = replay(args.folder, args.tracking_uri)
    except (OSError, RuntimeError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    print(f"uploaded into run {run_id}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""`python -m functional_ast`: train any labelled image folder with any model (see functional_ast.cli)."""

import sys

from functional_ast.cli.main import main

if __name__ == "__main__":
    sys.exit(main())

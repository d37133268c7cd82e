"""`python -m functional_ast`: train any labelled image folder with any model (see functional_ast.cli);
`python -m functional_ast savings ...`: does selection pay on it (see functional_ast.cli.savings)."""

import sys

if __name__ == "__main__":
    if sys.argv[1:2] == ["savings"]:
        from functional_ast.cli.savings import main as savings

        sys.exit(savings(sys.argv[2:]))
    from functional_ast.cli.main import main

    sys.exit(main())

import sys

if sys.argv[1:2] == ["shell"]:  # the commonest call: kept free of the simulator's model (enter.py)
    from .namespace import main as shell_main
    sys.exit(shell_main(sys.argv[2:]))
from .cli import main  # noqa: E402

main()

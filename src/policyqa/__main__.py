"""`python -m policyqa` and the `policyqa` command: the entry point, which loads the CLI."""
import _signal  # the C module under `signal`, already loaded: `signal` itself takes a while to import
import os
import sys


def _interrupted(signum, frame) -> None:
    # Ctrl-C while the modules are still loading: nothing has started that needs a clean
    # end, and a KeyboardInterrupt here would print a traceback from inside an import.
    os.write(2, b"policyqa: interrupted\n")
    os._exit(130)


def main() -> int:
    _signal.signal(_signal.SIGINT, _interrupted)  # the CLI restores Ctrl-C once it runs
    from .cli import main as cli_main

    return cli_main()


if __name__ == "__main__":
    sys.exit(main())

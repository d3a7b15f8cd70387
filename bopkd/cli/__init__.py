"""The ``bopkd`` command line (Typer). Each command is a thin layer over the package's functions.

User errors (:class:`~bopkd.errors.BopkdError`) print one line and exit with status 2; Ctrl-C exits
with status 130 after the interrupted stage has cleaned up.
"""

from __future__ import annotations

import sys

from bopkd.cli.app import app, err_console
from bopkd.errors import BopkdError

# The command modules register their commands on ``app``, in the order ``bopkd --help`` lists them.
# isort: off
from bopkd.cli import data, evaluate, train, pipeline  # noqa: E402, F401
# isort: on

__all__ = ["app", "main"]


def main() -> None:
    """Entry point of the ``bopkd`` console script: one-line errors, no tracebacks."""
    try:
        rc = app(standalone_mode=False)
    except BopkdError as e:
        err_console.print(f"[red]error:[/red] {e}", highlight=False, soft_wrap=True)
        sys.exit(2)
    except KeyboardInterrupt:
        err_console.print(
            "[red]interrupted[/red]: partial outputs were left as temporary files or removed; rerun to continue",
            soft_wrap=True,
        )
        sys.exit(130)
    except Exception as e:
        # Typer vendors click; its usage errors carry ``show`` and ``exit_code``.
        name = type(e).__name__
        if name == "Exit":
            sys.exit(getattr(e, "exit_code", 0))
        if name == "Abort":
            sys.exit(130)
        if hasattr(e, "show") and hasattr(e, "exit_code"):
            e.show()
            sys.exit(e.exit_code)
        raise
    # Outside standalone mode Typer turns Ctrl-C into Exit(130) and returns exit codes instead of exiting.
    if rc == 130:
        err_console.print(
            "[red]interrupted[/red]: partial outputs were left as temporary files or removed; rerun to continue",
            soft_wrap=True,
        )
    if isinstance(rc, int) and rc != 0:
        sys.exit(rc)


if __name__ == "__main__":
    main()

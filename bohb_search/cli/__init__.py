"""The command line ``python -m bohb_search <command>``: flags derived from the configuration dataclasses,
handlers that load torch/Ray/MLflow only when run, and bad input reported as one line by :func:`main`."""

from __future__ import annotations

import argparse
import errno
import re
import sys

from .flags import UsageError

__all__ = ["UsageError", "build_parser", "main"]


class Parser(argparse.ArgumentParser):
    """argparse, reading ``--lr -1e-3`` as a (negative) value: argparse's own test of what looks like a
    negative number misses the exponent form, and a value that is not one is then named by the config's
    own check ("lr: invalid value -0.001") instead of "expected one argument"."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._negative_number_matcher = re.compile(r"^-(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?$")

    def error(self, message: str):
        """A flag argparse itself refuses (a missing one, a value of the wrong type or range): one line, like
        every other bad input, naming the flag and where the flags are listed (argparse prints its usage)."""
        self.exit(2, f"error: {' '.join(message.split())} (see {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    from . import data_cmds, experiment_cmds, search_cmds, train_cmds

    parser = Parser(
        prog="bohb-search",
        description="Anomalous machine-sound detection with an Audio-Mamba encoder, pOE + GRL fine-tuning and BOHB search.",
    )
    sub = parser.add_subparsers(dest="command", metavar="<command>", required=True)
    for module in (data_cmds, train_cmds, search_cmds, experiment_cmds):
        module.register(sub)
    return parser


def user_errors() -> tuple[type[BaseException], ...]:
    """Exceptions that mean bad input rather than a bug: reported as one line."""
    from data.audio import BadAudioError
    from data.datasets import DataError
    from data.manifest import ManifestError
    from models import CheckpointError

    return (UsageError, DataError, BadAudioError, ManifestError, CheckpointError, ValueError, FileNotFoundError)


# what the file system answers about a place the user chose (a folder that is a file, a read-only mount, a full
# disk): the output flags are checked before any work, and whatever happens later is still one line, no traceback
LOCATION_ERRNOS = frozenset({errno.EACCES, errno.EPERM, errno.EROFS, errno.ENOTDIR, errno.EISDIR, errno.EEXIST,
                             errno.ENOSPC, errno.EDQUOT, errno.ENAMETOOLONG, errno.ELOOP})


def _location_error(err: BaseException) -> str | None:
    if isinstance(err, OSError) and err.errno in LOCATION_ERRNOS:
        where = " -> ".join(str(f) for f in (err.filename, err.filename2) if f is not None)
        return f"{where}: {err.strerror}" if where else (err.strerror or str(err))
    return None


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        from .common import check_outputs

        check_outputs(args)
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except Exception as err:  # noqa: BLE001 - sorted into bad input (one line) and bugs (traceback) below
        if isinstance(err, UsageError) or isinstance(err, user_errors()):
            from data.audio import BadAudioError

            message = " ".join(str(err).split())
            if isinstance(err, BadAudioError) and "--on-bad-file" not in message:
                message += " (use --on-bad-file skip to leave such files out)"
            print(f"error: {message}", file=sys.stderr)
            return 2
        location = _location_error(err)
        if location is not None:
            print(f"error: {' '.join(location.split())}", file=sys.stderr)
            return 2
        raise


if __name__ == "__main__":
    raise SystemExit(main())

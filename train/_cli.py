"""Shared command-line plumbing: flags generated from config dataclasses, one-line errors."""

import argparse
import dataclasses
import os
import sys
import typing


class OneLineParser(argparse.ArgumentParser):
    """An ArgumentParser whose errors are one line on stderr and exit status 2 (no usage dump)."""

    def error(self, message):
        self.exit(2, f"{self.prog}: error: {message} (see --help)\n")


def _type_of(field):
    hint = field.type if not isinstance(field.type, str) else field.type
    return {"int": int, "float": float, "str": str, "bool": bool}.get(
        hint if isinstance(hint, str) else getattr(hint, "__name__", "str"), str)


def parser_for(config_cls, prog, description):
    """An argument parser with one `--flag-name` per field of `config_cls` (default and help from it)."""
    parser = OneLineParser(prog=prog, description=description,
                           formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    for field in dataclasses.fields(config_cls):
        flag = "--" + field.name.replace("_", "-")
        meta = field.metadata
        kind = _type_of(field)
        if kind is bool:
            parser.add_argument(flag, action="store_true", help=meta.get("help"))
            continue
        kwargs = {"type": kind, "default": field.default, "help": meta.get("help")}
        if "choices" in meta:
            kwargs["choices"] = meta["choices"]
        if meta.get("nargs"):
            kwargs["nargs"] = meta["nargs"]
        parser.add_argument(flag, **kwargs)
    return parser


def run_main(main, argv=None):
    """Runs `main(argv)`; a `UserError` becomes one line on stderr and exit status 2, never a traceback."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # Keep TensorFlow's C++ start-up chatter out.
    from energy_models.errors import UserError

    try:
        return main(argv)
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted: outputs already written are complete (they are written atomically)",
              file=sys.stderr)
        return 130

"""Shared command-line plumbing: flags generated from config dataclasses, one-line errors."""

import argparse
import dataclasses
import errno
import os
import shlex
import sys
import warnings


class OneLineParser(argparse.ArgumentParser):
    """An ArgumentParser whose errors are one line on stderr and exit status 2 (no usage dump)."""

    def error(self, message):
        self.exit(2, f"{self.prog}: error: {message} (see --help)\n")


class _DefaultsOnceFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Appends "(default: X)" to a flag's help unless the help already says what the default is."""

    def _get_help_string(self, action):
        text = action.help or ""
        if "default" in text.lower() or action.default is None:
            return text
        return super()._get_help_string(action)


def _type_of(field):
    """The argparse type of a config field: int, float or bool by annotation, str otherwise."""
    name = field.type if isinstance(field.type, str) else getattr(field.type, "__name__", "str")
    return {"int": int, "float": float, "bool": bool}.get(name, str)


def parser_for(config_cls, prog, description):
    """An argument parser with one `--flag-name` per field of `config_cls` (default and help from it)."""
    parser = OneLineParser(prog=prog, description=description,
                           formatter_class=_DefaultsOnceFormatter)
    for field in dataclasses.fields(config_cls):
        flag = "--" + field.name.replace("_", "-")
        meta = field.metadata
        kind = _type_of(field)
        if kind is bool:
            # A flag that defaults to on also gets --no-FLAG to turn it off.
            # A default of None (filled in per method by the config's resolve) also gets both forms.
            action = argparse.BooleanOptionalAction if field.default or field.default is None else "store_true"
            default = None if field.default is None else bool(field.default)
            parser.add_argument(flag, action=action, default=default, help=meta.get("help"))
            continue
        kwargs = {"type": kind, "default": field.default, "help": meta.get("help")}
        if "choices" in meta:
            kwargs["choices"] = meta["choices"]
        for key in ("nargs", "const", "action", "metavar"):
            if key in meta:
                kwargs[key] = meta[key]
        if kwargs.get("action") == "append":
            kwargs["default"] = None  # argparse appends to a given default; None starts an empty list.
        parser.add_argument(flag, **kwargs)
    return parser


def import_tensorflow_quietly():
    """Imports TensorFlow and initialises its devices with the C++ start-up lines silenced.

    TensorFlow 2.21 prints "Could not find cuda drivers" and "failed call to cuInit" on machines
    without a GPU even with TF_CPP_MIN_LOG_LEVEL=3 (they are written before absl logging is set up), so a
    one-line error message would arrive under four lines of noise. File descriptor 2 is pointed at
    /dev/null only for the import and the device scan; Python exceptions still propagate.
    """
    if "tensorflow" in sys.modules:
        return
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    sys.stderr.flush()
    saved, devnull = os.dup(2), os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 2)
    try:
        import tensorflow as tf

        tf.config.list_physical_devices()
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)


def run_experiment(experiment, config_cls, prog, description, argv=None):
    """What `python -m train.gaussian` and `train.dem` do: flags -> config, `experiment.train_and_evaluate`,
    the printed summary and where the dashboards are. Returns the exit status 0."""
    args = parser_for(config_cls, prog, description).parse_args(argv)
    config = config_cls(**vars(args))
    metrics = experiment.train_and_evaluate(config)
    print("\n".join(experiment.summary_lines(metrics)))
    print(f"  run directory: {config.run_dir} (tensorboard --logdir {shlex.quote(str(config.run_dir))})")
    return 0


def _one_line_warning(message, category, filename, lineno, line=None):
    """Warnings as one line, "warning: MESSAGE", without Python's file, line and source line: a
    command-line user gets the message, not where in this project it was raised."""
    return f"warning: {message}\n"


# Write failures that are the user's environment (a full disk, a read-only folder), not a bug.
_WRITE_ERRNOS = (errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM)


def run_main(main, argv=None):
    """Runs `main(argv)`; a `UserError` becomes one line on stderr and exit status 2, never a traceback.

    So does a failed write that the writers did not turn into a `UserError` themselves (no space left,
    read-only file system, permission denied).
    """
    import_tensorflow_quietly()
    from energy_models.errors import UserError

    warnings.formatwarning = _one_line_warning
    try:
        return main(argv)
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except OSError as e:
        if e.errno not in _WRITE_ERRNOS:
            raise
        from energy_models.files import write_error

        print(f"error: {write_error(e.filename or 'a file', e)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted: outputs already written are complete (they are written atomically); run the "
              "same command again to resume from the newest checkpoint", file=sys.stderr)
        return 130

"""Executes the tutorials as Jupyter notebooks and writes each, with its printed output and figures, as
NAME.ipynb beside its jupytext script NAME.py.

    python docs/tutorials/render.py [NAME.py ...]        (all of them by default)

Run from the repository root, with the data the tutorials name in the environment (README, "Tutorials").
The tests execute the same way (`execute`), so a tutorial that stops working fails CI.
"""

import os
import pathlib
import sys

HERE = pathlib.Path(__file__).resolve().parent
ROOT = HERE.parents[1]


def execute(script, timeout=1200):
    """The executed notebook (nbformat) of a jupytext percent script; raises on the first failing cell."""
    import jupytext
    import nbclient

    notebook = jupytext.read(script)
    # The kernel inherits this environment: TensorFlow's C++ start-up lines would fill the first outputs.
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    # The kernel runs in the repository root, so `import energy_models` finds the checkout.
    nbclient.NotebookClient(notebook, timeout=timeout, kernel_name="python3",
                            resources={"metadata": {"path": str(ROOT)}}).execute()
    return notebook


def main(names):
    import nbformat

    for script in [HERE / name for name in names] or sorted(HERE.glob("[0-9][0-9]_*.py")):
        notebook = execute(script)
        nbformat.write(notebook, script.with_suffix(".ipynb"))
        print(f"wrote {script.with_suffix('.ipynb').relative_to(ROOT)}")


if __name__ == "__main__":
    main(sys.argv[1:])

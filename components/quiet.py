"""Keep the command line's stderr for our own progress and messages.

Frameworks we load print their own notices there: Feast's pydantic field-shadowing warnings, FastAPI's
(through KServe) deprecation notices, transformers asking for a deep-learning backend (through
alibi-detect), and Feast's coloured text and progress bars while it materialises. On a terminal the
bars and colours are useful; in a log file they are noise.
"""

from __future__ import annotations

import os
import sys
import warnings


def quiet_frameworks() -> None:
    """Silence known framework notices; no progress bars or ANSI colours unless stderr is a terminal."""
    warnings.filterwarnings("ignore", message=r'Field name "vector_\w+" in "\w+" shadows an attribute',
                            category=UserWarning)
    warnings.filterwarnings("ignore", message=r".*ORJSONResponse", category=DeprecationWarning)
    warnings.filterwarnings("ignore", message=r"The spark .* is an experimental feature", category=RuntimeWarning)
    warnings.filterwarnings("ignore", category=DeprecationWarning, module=r"pyspark\.")  # pyspark 3.5 on pandas 2
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    if not sys.stderr.isatty():
        os.environ.setdefault("TQDM_DISABLE", "1")  # tqdm reads it for every bar, Feast's included
        import colorama

        colorama.init()  # on a stream that is not a terminal, colorama strips ANSI sequences

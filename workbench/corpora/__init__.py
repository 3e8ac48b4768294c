"""Built-in text sets and the loader for user corpora.

>>> from workbench.corpora import load_corpus, list_builtin
>>> docs = load_corpus("builtin:general", limit=100)
"""

from workbench.corpora.loader import (
    BUILTIN_PREFIX,
    DATA_DIR,
    builtin_path,
    list_builtin,
    load_corpus,
    load_text_set,
)

__all__ = [
    "BUILTIN_PREFIX",
    "DATA_DIR",
    "builtin_path",
    "list_builtin",
    "load_corpus",
    "load_text_set",
]

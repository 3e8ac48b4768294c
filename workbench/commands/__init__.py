"""One module per ``workbench`` verb; see :mod:`workbench.cli` for the contract."""

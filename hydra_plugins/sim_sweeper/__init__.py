"""The ``vectorised`` Hydra sweeper of ``sim`` (``hydra/sweeper=vectorised``)."""

"""One module per pipeline stage, named like the stage (and its notebook ``notebooks/NN_*.ipynb``).

Each module has:

- ``NOTEBOOK``, ``KIND`` ("compute" or "figure"), ``INPUTS`` (stages it reads), ``OUTPUTS``
  (folders/globs under ``results/<profile>/`` it writes);
- a frozen ``Params`` dataclass whose defaults are the organism profile's values, one documented,
  typed and ranged field per parameter (see :mod:`rlsft.params`); the notebook's ``parameters``
  cell repeats these defaults as a flat block of commented literals (a test keeps them equal);
- ``run(ctx, params) -> dict`` that does the stage's work with the method modules, writes its
  tables atomically under ``ctx.dir`` and returns them by name for the notebook to show and plot.

The stage order, names and parameter validation live in :mod:`rlsft.registry`; this package
itself imports nothing.
"""

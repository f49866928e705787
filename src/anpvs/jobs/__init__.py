"""The jobs: everything the command line runs, built on the library core (training, evaluation, checks).

One module per command: :mod:`.evaluate` (``anpvs eval``), :mod:`.check` (``anpvs check``), :mod:`.compact`
(``anpvs compact``), :mod:`.demo` (``anpvs demo``), :mod:`.audit` (``anpvs audit``), :mod:`.reproduce`
(``anpvs reproduce``: protocol, plan, run, tables) and :mod:`.figures` (``anpvs figures``: compute, plot, draw).
Every job that starts from a checkpoint opens it with :func:`.context.open_run`. The core never imports this
package (tests/test_layers.py).
"""

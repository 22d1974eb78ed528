"""The ``geoseg`` command line: thin commands that parse options and call :mod:`geoseg.api`."""

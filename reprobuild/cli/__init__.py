"""The ``reprobuild`` command line."""

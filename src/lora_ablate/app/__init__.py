"""The Hydra glue, above run/ and report/: console entry points, the validating sweeper, the
report callback, command-line override checks and the config-store registration."""

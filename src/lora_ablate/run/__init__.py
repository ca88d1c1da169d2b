"""Runs: batches, the training loop, the runner that writes a record, loggers and metrics."""

"""Configuration: the typed schema behind conf/, override checks, the sweeper and Hydra callbacks."""

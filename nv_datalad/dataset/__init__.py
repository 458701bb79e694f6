"""The dataset on disk: the only layer that runs git and git-annex (see runner.py)."""

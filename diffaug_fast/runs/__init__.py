"""The run-folder format and the weights a run loads or exports (see runs/files.py for every file name)."""

"""Library behind train.py and eval.py: data, training, export and evaluation.

Every function takes plain arguments and returns what it computed, so the
scripts stay thin and tests (or a notebook) can call the same code.
"""

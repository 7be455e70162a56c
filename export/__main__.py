"""`python -m export ...` from a checkout; installed, the same command is `keras-preact-export`."""

from keras_preact.export.cli import run

if __name__ == "__main__":
    run()

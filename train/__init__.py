"""Training entrypoints, dataset builders and evaluation (installed as ``soundsight_train``)."""

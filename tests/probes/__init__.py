"""Callbacks that the tests add to ``train.py`` runs in subprocesses (``--trainer.callbacks`` or a second
``--config``), as ``probes.<module>.<Class>``; the subprocess finds them through ``helpers.subprocess_env``
(``tests/`` on ``PYTHONPATH``). Each writes what its rank saw to a file the test reads, or stops the run."""

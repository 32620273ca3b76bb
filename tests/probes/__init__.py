"""Callbacks that the tests add to ``train.py`` runs in other processes (``--trainer.callbacks`` or a second
``--config``), as ``probes.<module>.<Class>``; a fresh process (DDP rank 1) finds them through
``helpers.subprocess_env`` (``tests/`` on ``PYTHONPATH``). Each writes what its rank saw to a file the test
reads, or stops the run."""

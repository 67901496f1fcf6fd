"""Console entry points (each a Hydra app on one top-level config in conf/)."""

from grok.utils.startup import quiet_start

quiet_start()  # before any entry point's own imports: some libraries warn as they are imported (peft -> bitsandbytes)

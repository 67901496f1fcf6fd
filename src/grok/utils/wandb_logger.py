"""Lightning's W&B logger without the one setting that makes wandb warn on every run."""

from __future__ import annotations

from typing import Any

from lightning.pytorch.loggers import WandbLogger as LightningWandbLogger


class WandbLogger(LightningWandbLogger):
    """`lightning.pytorch.loggers.WandbLogger` that leaves wandb's deprecated `anonymous` setting unset.

    Lightning always passes `anonymous=None`, and wandb answers every run with "The anonymous setting has no effect
    and will be removed in a future version", which nobody running GROK can act on.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if self._wandb_init.get("anonymous") is None:
            self._wandb_init.pop("anonymous", None)

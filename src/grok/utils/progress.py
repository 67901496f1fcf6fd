"""Lightning's progress bar on stderr (Lightning writes its tqdm bars to stdout, which carries a command's result)."""

from __future__ import annotations

import sys
from contextlib import redirect_stdout

from lightning.pytorch.callbacks import TQDMProgressBar
from tqdm import tqdm


class StderrProgressBar(TQDMProgressBar):
    """`TQDMProgressBar` whose bars write to stderr."""

    def init_sanity_tqdm(self) -> tqdm:
        with redirect_stdout(sys.stderr):
            return super().init_sanity_tqdm()

    def init_train_tqdm(self) -> tqdm:
        with redirect_stdout(sys.stderr):
            return super().init_train_tqdm()

    def init_predict_tqdm(self) -> tqdm:
        with redirect_stdout(sys.stderr):
            return super().init_predict_tqdm()

    def init_validation_tqdm(self) -> tqdm:
        with redirect_stdout(sys.stderr):
            return super().init_validation_tqdm()

    def init_test_tqdm(self) -> tqdm:
        with redirect_stdout(sys.stderr):
            return super().init_test_tqdm()

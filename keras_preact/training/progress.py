"""What a verbose chief prints while it trains: a progress bar in a terminal, plain lines elsewhere.

In a terminal (stdout is a TTY) or a Jupyter notebook each epoch gets its
"Epoch e/E" header and Keras' progress bar, redrawn in place. Anywhere else
(stdout redirected to a file: nohup, Slurm, Kubernetes, a pipe) frames redrawn
with carriage returns and ANSI codes would make the log unreadable, so the
same header is followed by plain lines, as timm's train.py writes them: one
every `log_every` steps and one per epoch, each with the step, the epoch's
running loss and accuracy (the figures history.csv records at the epoch's
end), the learning rate and the images per second since the previous line.
Lines are flushed at once, so a log file is up to date while the run goes on.

>>> import io
>>> out = io.StringIO()
>>> progress = EpochProgress(0, 2, (0, 4), 8, global_batch=32, log_every=2, stream=out)
>>> progress.update(2, [4.6, 20, 64], 0.1)
>>> progress.end({"step": 4, "loss": 2.25, "accuracy": 0.25, "learning_rate": 0.1, "seconds": 2})
>>> print(out.getvalue().replace("images/s", "img/s"), end="")  # doctest: +ELLIPSIS
Epoch 1/2
step 2/8 (epoch 1/2): loss 2.3000, accuracy 0.3125, lr 0.1, ... img/s
epoch 1/2 ended at step 4/8: loss 2.2500, accuracy 0.2500, lr 0.1, 64.0 img/s, 2.0 s
"""

from __future__ import annotations

import sys
import time

import keras


def is_terminal(stream=None):
    """Whether `stream` (default: stdout) redraws a line in place, so that a progress bar can:
    a terminal, or a Jupyter notebook's output (an ipykernel stream, where Keras' own bar
    draws too)."""
    stream = sys.stdout if stream is None else stream
    if type(stream).__module__.startswith("ipykernel."):
        return True
    isatty = getattr(stream, "isatty", None)
    try:
        return bool(isatty and isatty())
    except ValueError:  # a closed stream
        return False


class EpochProgress:
    """One epoch's display on a verbose chief: Keras' bar in a terminal, else plain lines.

    Args:
        epoch, num_epochs: the epoch's index (from 0) and how many there are.
        span: `(first step, end step)` of the epoch.
        total_steps: the run's last step.
        global_batch: images per step (for the images/s figure).
        log_every: steps between plain lines (not in a terminal).
        stream: where to print (default: stdout); a terminal gets the bar.
        first_step: the step this process starts the epoch from (a resumed or
            rolled-back run's, mid-epoch): the running means and images/s count
            from it (default: the epoch's first step).
    """

    def __init__(
        self,
        epoch,
        num_epochs,
        span,
        total_steps,
        *,
        global_batch,
        log_every,
        stream=None,
        first_step=None,
    ):
        self.stream = sys.stdout if stream is None else stream
        self.epoch, self.num_epochs = epoch, num_epochs
        self.start_step, self.end_step = span
        self.first_step = self.start_step if first_step is None else first_step
        self.total_steps = total_steps
        self.global_batch = global_batch
        self.log_every = max(1, int(log_every))
        self.mid_line = False
        self._mark = (self.first_step, time.time())
        print(f"Epoch {epoch + 1}/{num_epochs}", file=self.stream, flush=True)
        self.bar = None
        if is_terminal(self.stream):
            # Every figure is stateful: the bar shows the epoch's running means,
            # so its last frame shows what history.csv records.
            self.bar = keras.utils.Progbar(
                self.end_step - self.start_step, stateful_metrics=["loss", "accuracy", "lr"]
            )

    def update(self, step, totals, learning_rate):
        """After the steps up to `step`: `totals` are the epoch's sums of loss, correct, images."""
        loss = totals[0] / max(1, step - self.first_step)
        accuracy = totals[1] / max(1, totals[2])
        if self.bar is not None:
            self.bar.update(
                step - self.start_step,
                [("loss", loss), ("accuracy", accuracy), ("lr", learning_rate)],
            )
            self.mid_line = step < self.end_step
            return
        if step >= self.end_step or not self._since_line(step):
            return  # no multiple of log_every passed, or the epoch's own line follows
        self._line(
            f"step {step}/{self.total_steps} (epoch {self.epoch + 1}/{self.num_epochs}): "
            f"loss {loss:.4f}, accuracy {accuracy:.4f}, lr {learning_rate:.4g}, "
            f"{self._images_per_second(step):.1f} images/s"
        )

    def _since_line(self, step):
        """Whether a multiple of `log_every` lies between the last line and `step`."""
        return step // self.log_every > self._mark[0] // self.log_every

    def _images_per_second(self, step):
        last_step, last_time = self._mark
        now = time.time()
        self._mark = (step, now)
        return (step - last_step) * self.global_batch / max(now - last_time, 1e-9)

    def _line(self, text):
        print(text, file=self.stream, flush=True)

    def end(self, row):
        """The epoch's line (not in a terminal, where the bar's last frame says the same)."""
        if self.bar is not None:
            return
        steps = row["step"] - self.first_step
        rate = steps * self.global_batch / max(row["seconds"], 1e-9)
        self._line(
            f"epoch {self.epoch + 1}/{self.num_epochs} ended at step {row['step']}/"
            f"{self.total_steps}: loss {row['loss']:.4f}, accuracy {row['accuracy']:.4f}, "
            f"lr {row['learning_rate']:.4g}, {rate:.1f} images/s, {row['seconds']:.1f} s"
        )

    def interrupt(self):
        """Ends a bar's half-drawn line, so that a message printed next starts on its own."""
        if self.mid_line:
            print(file=self.stream, flush=True)
            self.mid_line = False

"""Callbacks for ``Sequential.fit``: hooks called around each epoch.

    model.fit(X, y, epochs=100, validation_data=(Xv, yv),
              callbacks=[EarlyStopping(patience=5, restore_best_weights=True),
                         LearningRateScheduler(lambda epoch, lr: lr * 0.95),
                         ModelCheckpoint("ckpt-{epoch}.npz")])

``fit`` sets ``callback.model`` and ``callback.optimizer`` before training; ``logs`` is the dict
of this epoch's values (``loss``, ``val_loss``, metrics, ``lr``). A callback stops training by
setting ``model.stop_training = True``.

Logging and a plateau schedule::

    from fastnn.callbacks import CSVLogger, ReduceLROnPlateau, TensorBoard
    history = model.fit(X, y, epochs=50, validation_data=(Xv, yv), metrics=["accuracy"],
                        callbacks=[CSVLogger("train.csv"),            # one row per epoch
                                   TensorBoard("runs/exp1"),          # pip install 'fastnn[tensorboard]'
                                   ReduceLROnPlateau(factor=0.5, patience=3)])
    # tensorboard --logdir runs   shows loss, val_loss, accuracy, val_accuracy and lr per epoch
"""
import csv
import math
import os

__all__ = ["Callback", "EarlyStopping", "LearningRateScheduler", "ModelCheckpoint", "CSVLogger",
           "TensorBoard", "ReduceLROnPlateau"]


class Callback:
    model = None
    optimizer = None

    def on_train_begin(self, logs=None):
        pass

    def on_epoch_begin(self, epoch, logs=None):
        pass

    def on_epoch_end(self, epoch, logs=None):
        pass

    def on_train_end(self, logs=None):
        pass


def _monitored(where, monitor, logs):
    if monitor not in logs:
        raise ValueError(f"{where}: monitored value {monitor!r} is not in this epoch's logs "
                         f"{sorted(logs)} (val_* values need validation_data)")
    return float(logs[monitor])


def _better(mode, monitor):
    if mode == "auto":
        mode = "max" if ("acc" in monitor) else "min"
    if mode not in ("min", "max"):
        raise ValueError(f"mode must be 'min', 'max' or 'auto', got {mode!r}")
    return mode


class EarlyStopping(Callback):
    """Stop when ``monitor`` has not improved by more than ``min_delta`` for ``patience`` epochs
    (Keras' rule: with ``patience=3`` training ends 3 epochs after the best one; 0 stops at the
    first epoch without improvement).

    ``restore_best_weights=True`` puts back the weights of the best epoch when training stops
    (or ends). ``mode`` is ``"min"``, ``"max"`` or ``"auto"`` (max for accuracies).
    ``stopped_epoch`` and ``best_epoch`` are set afterwards (0-based, -1 if not applicable).
    """

    def __init__(self, monitor="val_loss", patience=0, min_delta=0.0, mode="auto",
                 restore_best_weights=False):
        if patience < 0:
            raise ValueError(f"EarlyStopping: patience must be >= 0, got {patience}")
        self.monitor, self.patience, self.min_delta = monitor, int(patience), abs(float(min_delta))
        self.mode = _better(mode, monitor)
        self.restore_best_weights = restore_best_weights

    def on_train_begin(self, logs=None):
        self.wait, self.stopped_epoch, self.best_epoch = 0, -1, -1
        self.best = math.inf if self.mode == "min" else -math.inf
        self.best_weights = None

    def _improved(self, value):
        if self.mode == "min":
            return value < self.best - self.min_delta
        return value > self.best + self.min_delta

    def on_epoch_end(self, epoch, logs=None):
        value = _monitored("EarlyStopping", self.monitor, logs or {})
        if self._improved(value):
            self.best, self.best_epoch, self.wait = value, epoch, 0
            if self.restore_best_weights:
                self.best_weights = self.model.state_dict()
            return
        self.wait += 1
        if self.wait >= self.patience:  # Keras: stop after `patience` epochs without improvement
            self.stopped_epoch = epoch
            self.model.stop_training = True

    def on_train_end(self, logs=None):
        if self.restore_best_weights and self.best_weights is not None:
            self.model.load_state_dict(self.best_weights)


class LearningRateScheduler(Callback):
    """Set ``optimizer.lr = schedule(epoch, lr)`` at the start of each epoch (epoch is 0-based)."""

    def __init__(self, schedule):
        if not callable(schedule):
            raise TypeError("LearningRateScheduler: schedule must be callable (epoch, lr) -> lr")
        self.schedule = schedule

    def on_epoch_begin(self, epoch, logs=None):
        lr = self.schedule(epoch, self.optimizer.lr)
        try:
            lr = float(lr)
        except (TypeError, ValueError):
            raise TypeError(f"LearningRateScheduler: schedule returned {lr!r}, not a number") from None
        if not (math.isfinite(lr) and lr >= 0):
            raise ValueError(f"LearningRateScheduler: schedule returned lr={lr} at epoch {epoch}")
        self.optimizer.lr = lr


class ModelCheckpoint(Callback):
    """Save the model (and the optimizer's state) to ``path`` at the end of each epoch, atomically.

    ``path`` may hold ``{epoch}`` (1-based) and any key of the logs, e.g.
    ``"ckpt-{epoch:03d}-{val_loss:.3f}.npz"``. With ``save_best_only=True`` only an epoch that
    improves ``monitor`` is written. The file also holds the completed epoch count, the history
    and fastnn's random generator state, so ``fit(..., resume=path)`` continues exactly.
    """

    def __init__(self, path, monitor="val_loss", save_best_only=False, mode="auto",
                 save_optimizer=True):
        self.path, self.monitor, self.save_best_only = str(path), monitor, save_best_only
        self.mode = _better(mode, monitor)
        self.save_optimizer = save_optimizer

    def on_train_begin(self, logs=None):
        self.best = math.inf if self.mode == "min" else -math.inf
        self.last_path = None

    def on_epoch_end(self, epoch, logs=None):
        logs = logs or {}
        if self.save_best_only:
            value = _monitored("ModelCheckpoint", self.monitor, logs)
            if not (value < self.best if self.mode == "min" else value > self.best):
                return
            self.best = value
        path = self.path.format(epoch=epoch + 1, **logs)
        self.model.save(path, optimizer=self.optimizer if self.save_optimizer else None,
                        training_state=self.model.training_state(epoch))
        self.last_path = path


class CSVLogger(Callback):
    """Write one CSV row per epoch to ``filename``: ``epoch`` (0-based, as Keras) and every value
    of the epoch's logs (``loss``, metrics, ``val_*``, ``lr``), columns in the first epoch's order.

    ``append=True`` adds to an existing file (its header is kept; the columns must match, as
    when resuming a run); otherwise the file is overwritten. The file is flushed every epoch, so
    a crash leaves every finished epoch on disk.
    """

    def __init__(self, filename, separator=",", append=False):
        self.filename, self.separator, self.append = os.fspath(filename), separator, append
        self._file = None
        self._writer = None
        self._keys = None

    def on_train_begin(self, logs=None):
        has_rows = (self.append and os.path.exists(self.filename)
                    and os.path.getsize(self.filename) > 0)
        self._keys = None
        if has_rows:
            with open(self.filename, newline="") as f:
                header = next(csv.reader(f, delimiter=self.separator), None)
            self._keys = header[1:] if header and header[0] == "epoch" else None
        self._file = open(self.filename, "a" if has_rows else "w", newline="")
        self._writer = csv.writer(self._file, delimiter=self.separator)

    def on_epoch_end(self, epoch, logs=None):
        logs = logs or {}
        if self._keys is None:
            self._keys = list(logs)
            self._writer.writerow(["epoch", *self._keys])
        self._writer.writerow([epoch, *(_csv_value(logs.get(k, "")) for k in self._keys)])
        self._file.flush()

    def on_train_end(self, logs=None):
        if self._file is not None:
            self._file.close()
            self._file = None


def _csv_value(v):
    return repr(float(v)) if isinstance(v, float) else v


class TensorBoard(Callback):
    """Write every value of each epoch's logs as a TensorBoard scalar (tag = the log's name,
    step = the 0-based epoch) to event files in ``log_dir``, through ``tensorboardX``'s
    ``SummaryWriter`` (``pip install 'fastnn[tensorboard]'``). View with
    ``tensorboard --logdir LOG_DIR``."""

    def __init__(self, log_dir="runs", flush_secs=10):
        try:
            from tensorboardX import SummaryWriter
        except ImportError as err:
            raise ImportError("TensorBoard needs tensorboardX: pip install 'fastnn[tensorboard]' "
                              "(or pip install tensorboardX)") from err
        self._writer_class = SummaryWriter
        self.log_dir, self.flush_secs = os.fspath(log_dir), flush_secs
        self.writer = None

    def on_train_begin(self, logs=None):
        if self.writer is None:
            self.writer = self._writer_class(logdir=self.log_dir, flush_secs=self.flush_secs)

    def on_epoch_end(self, epoch, logs=None):
        for key, value in (logs or {}).items():
            try:
                value = float(value)
            except (TypeError, ValueError):
                continue
            self.writer.add_scalar(key, value, epoch)
        self.writer.flush()

    def on_train_end(self, logs=None):
        if self.writer is not None:
            self.writer.close()
            self.writer = None


class ReduceLROnPlateau(Callback):
    """Multiply the optimizer's ``lr`` by ``factor`` when ``monitor`` has stopped improving for
    more than ``patience`` epochs, with ``torch.optim.lr_scheduler.ReduceLROnPlateau``'s rules:

    - improvement (``threshold_mode="rel"``): ``value < best * (1 - threshold)`` in mode
      ``"min"``, ``value > best * (1 + threshold)`` in ``"max"``; (``"abs"``): ``value < best -
      threshold`` / ``value > best + threshold``;
    - after ``patience + 1`` epochs without improvement the lr becomes ``max(lr * factor,
      min_lr)`` (not applied if that changes it by ``eps`` or less) and the count restarts;
    - for ``cooldown`` epochs after a reduction bad epochs are not counted.

    Checked at the end of every epoch (``fit`` logs the lr of the epoch that just ran; the new one
    applies from the next). ``monitor`` defaults to ``"val_loss"`` (needs ``validation_data``).
    ``num_bad_epochs``, ``best`` and ``cooldown_counter`` are PyTorch's attributes.
    """

    def __init__(self, monitor="val_loss", mode="min", factor=0.1, patience=10, threshold=1e-4,
                 threshold_mode="rel", cooldown=0, min_lr=0.0, eps=1e-8, verbose=False):
        if not factor < 1.0:
            raise ValueError(f"ReduceLROnPlateau: factor must be < 1.0, got {factor!r}")
        if mode not in ("min", "max"):
            raise ValueError(f"ReduceLROnPlateau: mode must be 'min' or 'max', got {mode!r}")
        if threshold_mode not in ("rel", "abs"):
            raise ValueError(f"ReduceLROnPlateau: threshold_mode must be 'rel' or 'abs', got "
                             f"{threshold_mode!r}")
        if patience < 0 or cooldown < 0 or min_lr < 0:
            raise ValueError(f"ReduceLROnPlateau: patience, cooldown and min_lr must be >= 0, got "
                             f"{patience!r}, {cooldown!r}, {min_lr!r}")
        self.monitor, self.mode, self.factor = monitor, mode, float(factor)
        self.patience, self.threshold, self.threshold_mode = int(patience), float(threshold), threshold_mode
        self.cooldown, self.min_lr, self.eps, self.verbose = int(cooldown), float(min_lr), float(eps), verbose
        self._reset()

    def _reset(self):
        self.best = math.inf if self.mode == "min" else -math.inf
        self.num_bad_epochs = 0
        self.cooldown_counter = 0

    def on_train_begin(self, logs=None):
        self._reset()

    def is_better(self, value, best):
        if self.mode == "min":
            if self.threshold_mode == "rel":
                return value < best * (1.0 - self.threshold)
            return value < best - self.threshold
        if self.threshold_mode == "rel":
            return value > best * (self.threshold + 1.0)
        return value > best + self.threshold

    def step(self, value, optimizer=None):
        """One epoch's check with the monitored ``value`` (PyTorch's ``scheduler.step(value)``)."""
        optimizer = optimizer if optimizer is not None else self.optimizer
        value = float(value)
        if self.is_better(value, self.best):
            self.best = value
            self.num_bad_epochs = 0
        else:
            self.num_bad_epochs += 1
        if self.cooldown_counter > 0:
            self.cooldown_counter -= 1
            self.num_bad_epochs = 0
        if self.num_bad_epochs > self.patience:
            old = float(optimizer.lr)
            new = max(old * self.factor, self.min_lr)
            if old - new > self.eps:
                optimizer.lr = new
                if self.verbose:
                    print(f"ReduceLROnPlateau: {self.monitor} has not improved for "
                          f"{self.patience + 1} epochs; lr {old:.4g} -> {new:.4g}")
            self.cooldown_counter = self.cooldown
            self.num_bad_epochs = 0

    def on_epoch_end(self, epoch, logs=None):
        self.step(_monitored("ReduceLROnPlateau", self.monitor, logs or {}))

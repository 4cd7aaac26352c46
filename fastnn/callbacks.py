"""Callbacks for ``Sequential.fit``: hooks called around each epoch.

    model.fit(X, y, epochs=100, validation_data=(Xv, yv),
              callbacks=[EarlyStopping(patience=5, restore_best_weights=True),
                         LearningRateScheduler(lambda epoch, lr: lr * 0.95),
                         ModelCheckpoint("ckpt-{epoch}.npz")])

``fit`` sets ``callback.model`` and ``callback.optimizer`` before training; ``logs`` is the dict
of this epoch's values (``loss``, ``val_loss``, metrics, ``lr``). A callback stops training by
setting ``model.stop_training = True``.
"""
import math

__all__ = ["Callback", "EarlyStopping", "LearningRateScheduler", "ModelCheckpoint"]


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

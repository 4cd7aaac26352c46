"""Variational autoencoder (Kingma and Welling, 2014)."""
import math
import sys

import numpy as np

from .. import losses as _losses
from .. import optim as _optim
from .._random import rng
from ._composite import CompositeState

__all__ = ["VAE"]

_RECONSTRUCTION = {"bce": _losses.BCE, "bce_with_logits": _losses.BCEWithLogits, "mse": _losses.MSE}


class VAE(CompositeState):
    """Variational autoencoder: an encoder giving ``q(z|x) = N(mu, exp(logvar))`` and a decoder
    giving ``p(x|z)``, trained on the negative evidence lower bound

        z = mu + exp(logvar / 2) * eps,   eps ~ N(0, I)          (reparameterisation)
        loss = reconstruction(decoder(z), x) + kl_weight * KL(N(mu, exp(logvar)) || N(0, I))

    Both terms are summed over the features of one example and averaged over the batch: the
    reconstruction is the mean per-element loss times the number of elements per example, and
    the KL term is :class:`fastnn.losses.KLDivergenceNormal`.

    Args:
        encoder: a model (e.g. ``Sequential``) mapping ``x (N, ...)`` to ``(N, 2 * latent_dim)``:
            the first ``latent_dim`` columns are ``mu``, the last ``latent_dim`` are ``logvar``.
        decoder: a model mapping ``z (N, latent_dim)`` to the shape of ``x``.
        latent_dim: size of the code ``z``.
        kl_weight: weight of the KL term (1.0 is the ELBO; other values give a beta-VAE).
        reconstruction: ``"bce"`` (decoder ends in a Sigmoid, data in ``[0, 1]``),
            ``"bce_with_logits"`` (decoder outputs logits), ``"mse"``, or a ``fastnn.losses.Loss``.

    Example::

        enc = fnn.Sequential(L.Flatten(), L.Dense(64, 128), L.ReLU(), L.Dense(128, 2 * 8))
        dec = fnn.Sequential(L.Dense(8, 128), L.ReLU(), L.Dense(128, 64), L.Sigmoid(),
                             L.Reshape((1, 8, 8)))
        vae = fnn.models.VAE(enc, dec, latent_dim=8)
        vae.fit(X, epochs=50, batch_size=64); samples = vae.sample(16)
    """

    _parts = ("encoder", "decoder")  # state_dict keys "encoder.*", "decoder.*"

    def __init__(self, encoder, decoder, latent_dim, kl_weight=1.0, reconstruction="bce"):
        for name, part in (("encoder", encoder), ("decoder", decoder)):
            if not all(hasattr(part, a) for a in ("forward", "backward", "parameters")):
                raise TypeError(f"VAE: {name} must be a fastnn model or layer (forward, backward, "
                                f"parameters), got {type(part).__name__}")
        if isinstance(latent_dim, bool) or not isinstance(latent_dim, (int, np.integer)) \
                or latent_dim < 1:
            raise ValueError(f"VAE: latent_dim must be an int >= 1, got {latent_dim!r}")
        if not (isinstance(kl_weight, (int, float, np.number)) and kl_weight >= 0):
            raise ValueError(f"VAE: kl_weight must be a number >= 0, got {kl_weight!r}")
        if isinstance(reconstruction, str):
            if reconstruction.lower() not in _RECONSTRUCTION:
                raise ValueError(f"VAE: reconstruction must be one of {sorted(_RECONSTRUCTION)} or "
                                 f"a fastnn Loss, got {reconstruction!r}")
            reconstruction = _RECONSTRUCTION[reconstruction.lower()]()
        elif not isinstance(reconstruction, _losses.Loss):
            raise TypeError(f"VAE: reconstruction must be a name or a fastnn Loss, got "
                            f"{type(reconstruction).__name__}")
        self.encoder, self.decoder = encoder, decoder
        self.latent_dim, self.kl_weight = int(latent_dim), float(kl_weight)
        self.reconstruction_loss = reconstruction
        self.kl_loss = _losses.KLDivergenceNormal()
        self.history = None
        self._cache = None

    # --- parameters ---------------------------------------------------------------------------------
    def parameters(self):
        return list(self.encoder.parameters()) + list(self.decoder.parameters())

    def zero_grad(self):
        for p in self.parameters():
            p.zero_grad()

    @property
    def dtype(self):
        params = self.parameters()
        return params[0].data.dtype if params else np.dtype(np.float32)

    # --- the pieces ---------------------------------------------------------------------------------
    def _split(self, h, x_shape):
        if h.ndim != 2 or h.shape[1] != 2 * self.latent_dim:
            raise ValueError(f"VAE(latent_dim={self.latent_dim}): the encoder must output "
                             f"(N, {2 * self.latent_dim}) = [mu, logvar], got {h.shape} for "
                             f"input {x_shape}")
        return h[:, :self.latent_dim], h[:, self.latent_dim:]

    def encode(self, x, training=False):
        """``(mu, logvar)`` of ``q(z|x)``, each ``(N, latent_dim)`` (inference mode by default)."""
        x = np.asarray(x)
        mu, logvar = self._split(self.encoder.forward(x, training=training), x.shape)
        return mu.copy(), logvar.copy()

    def decode(self, z, training=False):
        """Decoder output for codes ``z (N, latent_dim)`` (inference mode by default)."""
        z = np.asarray(z)
        if z.ndim != 2 or z.shape[1] != self.latent_dim:
            raise ValueError(f"VAE(latent_dim={self.latent_dim}).decode: z must be "
                             f"(N, {self.latent_dim}), got {z.shape}")
        return self.decoder.forward(np.ascontiguousarray(z, dtype=self.dtype), training=training)

    def sample(self, n):
        """Decode ``n`` draws from the prior ``N(0, I)`` (fastnn's generator, ``fnn.seed``)."""
        if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1:
            raise ValueError(f"VAE.sample: n must be an int >= 1, got {n!r}")
        z = rng().standard_normal((int(n), self.latent_dim)).astype(self.dtype)
        return self.decode(z)

    def reconstruct(self, x):
        """Decode the posterior means: the deterministic reconstruction of ``x``."""
        mu, _ = self.encode(x)
        return self.decode(mu)

    # --- training step ------------------------------------------------------------------------------
    def forward(self, x, eps=None, training=True):
        """One pass: returns ``(x_hat, mu, logvar)`` and caches what :meth:`backward` needs.

        ``eps (N, latent_dim)`` is the reparameterisation noise; drawn from ``N(0, I)`` when None
        (pass a fixed array for gradient checks).
        """
        x = np.asarray(x)
        mu, logvar = self._split(self.encoder.forward(x, training=training), x.shape)
        if eps is None:
            eps = rng().standard_normal(mu.shape).astype(mu.dtype)
        else:
            eps = np.asarray(eps, dtype=mu.dtype)
            if eps.shape != mu.shape:
                raise ValueError(f"VAE(latent_dim={self.latent_dim}): eps must be {mu.shape}, "
                                 f"got {eps.shape}")
        std = np.exp(0.5 * logvar)
        z = mu + std * eps
        x_hat = self.decoder.forward(z, training=training)
        self._cache = {"x": x, "x_hat": x_hat, "mu": mu, "logvar": logvar, "std": std, "eps": eps}
        return x_hat, mu, logvar

    def loss(self, x, eps=None, training=True):
        """Forward pass and loss: returns ``(loss, reconstruction, kl)`` as floats."""
        x_hat, mu, logvar = self.forward(x, eps=eps, training=training)
        x = self._cache["x"]
        if x_hat.shape != x.shape:
            raise ValueError(f"VAE: the decoder output {x_hat.shape} must have the input's shape "
                             f"{x.shape} (end the decoder with a Reshape)")
        per_example = x[0].size
        reconstruction = self.reconstruction_loss.forward(x_hat, x) * per_example
        kl = self.kl_loss.forward(mu, logvar)
        self._cache["per_example"] = per_example
        return reconstruction + self.kl_weight * kl, reconstruction, kl

    def backward(self):
        """Back-propagate the last :meth:`loss` into the parameters' ``.grad`` (accumulates)."""
        if self._cache is None or "per_example" not in self._cache:
            raise RuntimeError("VAE.backward called before VAE.loss")
        c = self._cache
        dx_hat = self.reconstruction_loss.backward() * c["x_hat"].dtype.type(c["per_example"])
        dz = self.decoder.backward(dx_hat)
        dmu_kl, dlogvar_kl = self.kl_loss.backward()
        weight = c["mu"].dtype.type(self.kl_weight)
        # z = mu + exp(logvar / 2) * eps:  dz/dmu = 1,  dz/dlogvar = eps * std / 2
        dmu = dz + weight * dmu_kl
        dlogvar = dz * c["eps"] * c["std"] * 0.5 + weight * dlogvar_kl
        self.encoder.backward(np.ascontiguousarray(np.concatenate([dmu, dlogvar], axis=1)))

    def fit(self, X, epochs=10, batch_size=64, optimizer="adam", shuffle=True, verbose=1,
            validation_data=None):
        """Train on ``X (N, ...)`` with mini-batches; returns a ``History`` whose ``history``
        holds per-epoch ``loss``, ``reconstruction`` and ``kl`` (and ``val_*`` of each for
        ``validation_data``, an array like ``X``).

        ``optimizer``: an optimizer over :meth:`parameters` or a name (new, default settings).
        ``verbose``: 0 silent, 1 a tqdm progress bar, 2 one line per epoch.
        """
        from ..model import History

        X = self._check_data("fit", X)
        if validation_data is not None:
            validation_data = self._check_data("fit (validation_data)", validation_data)
        if isinstance(optimizer, str):
            optimizer = _optim.get(optimizer, self.parameters())
        elif not (hasattr(optimizer, "step") and hasattr(optimizer, "zero_grad")):
            raise TypeError(f"VAE.fit: optimizer must be a fastnn optimizer or a name, got "
                            f"{type(optimizer).__name__}")
        for name, v in (("epochs", epochs), ("batch_size", batch_size)):
            if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < (name == "batch_size"):
                raise ValueError(f"VAE.fit: {name} must be a non-negative int (batch_size >= 1), "
                                 f"got {v!r}")
        history = History()
        self.history = history
        n = len(X)
        for epoch in range(epochs):
            order = rng().permutation(n) if shuffle else np.arange(n)
            bar = _progress(verbose, n, f"epoch {epoch + 1}/{epochs}")
            sums = np.zeros(3)
            for start in range(0, n, batch_size):
                xb = X[order[start:start + batch_size]]
                self.zero_grad()
                values = self.loss(xb)
                if not math.isfinite(values[0]):
                    raise FloatingPointError(f"VAE.fit: the loss became {values[0]} at epoch "
                                             f"{epoch + 1}, batch {start // batch_size + 1}; "
                                             f"lower the learning rate")
                self.backward()
                optimizer.step()
                sums += np.array(values) * len(xb)
                if bar is not None:
                    bar.update(len(xb))
                    seen = min(n, start + batch_size)
                    bar.set_postfix_str(f"loss={sums[0] / seen:.4f} rec={sums[1] / seen:.4f} "
                                        f"kl={sums[2] / seen:.4f}", refresh=False)
            logs = dict(zip(("loss", "reconstruction", "kl"), (sums / n).tolist()))
            if validation_data is not None:
                logs.update({f"val_{k}": v for k, v in self.evaluate(validation_data).items()})
            if bar is not None:
                bar.close()
            elif verbose == 2:
                print(f"epoch {epoch + 1}/{epochs}  " +
                      "  ".join(f"{k}={v:.4g}" for k, v in logs.items()), file=sys.stderr)
            history._append(epoch, logs)
        return history

    def evaluate(self, X, batch_size=256):
        """``{"loss", "reconstruction", "kl"}`` over ``X`` in inference mode (one noise draw)."""
        X = self._check_data("evaluate", X)
        sums = np.zeros(3)
        for start in range(0, len(X), batch_size):
            xb = X[start:start + batch_size]
            sums += np.array(self.loss(xb, training=False)) * len(xb)
        return dict(zip(("loss", "reconstruction", "kl"), (sums / len(X)).tolist()))

    def _check_data(self, where, X):
        if not isinstance(X, np.ndarray) or X.dtype.kind != "f" or X.ndim < 2 or len(X) == 0:
            raise ValueError(f"VAE.{where}: X must be a non-empty float array (N, ...), got "
                             f"{getattr(X, 'shape', type(X).__name__)}")
        return X

    def __repr__(self):
        return (f"VAE(latent_dim={self.latent_dim}, kl_weight={self.kl_weight}, "
                f"reconstruction={type(self.reconstruction_loss).__name__},\n"
                f"  encoder={self.encoder!r},\n  decoder={self.decoder!r})")


def _progress(verbose, total, desc):
    if verbose != 1:
        return None
    from tqdm.auto import tqdm
    return tqdm(total=total, desc=desc, unit="samples", leave=True, dynamic_ncols=True,
                mininterval=0.2)

"""Generative adversarial networks: GAN (Goodfellow et al., 2014) with the DCGAN architecture
(Radford et al., 2016) as a builder, and WGAN (Arjovsky et al., 2017)."""
import math
import sys

import numpy as np

from .. import losses as _losses
from .. import optim as _optim
from .._random import rng
from ._composite import CompositeState

__all__ = ["GAN", "WGAN", "dcgan", "dcgan_init"]


def _check_part(where, name, part):
    if not all(hasattr(part, a) for a in ("forward", "backward", "parameters")):
        raise TypeError(f"{where}: {name} must be a fastnn model or layer (forward, backward, "
                        f"parameters), got {type(part).__name__}")


def _zero(params):
    for p in params:
        p.zero_grad()


def _progress(verbose, total, desc):
    if verbose != 1:
        return None
    from tqdm.auto import tqdm
    return tqdm(total=total, desc=desc, unit="samples", leave=True, dynamic_ncols=True,
                mininterval=0.2)


class _Adversarial(CompositeState):
    """What GAN and WGAN share: the two networks, sampling, state, and the ``fit`` loop."""

    _name = "GAN"
    _parts = ("generator", "discriminator")  # state_dict keys "generator.*", "discriminator.*"
    _logs = ("d_loss", "g_loss")

    def __init__(self, generator, discriminator, latent_dim):
        _check_part(self._name, "generator", generator)
        _check_part(self._name, "discriminator", discriminator)
        if isinstance(latent_dim, bool) or not isinstance(latent_dim, (int, np.integer)) \
                or latent_dim < 1:
            raise ValueError(f"{self._name}: latent_dim must be an int >= 1, got {latent_dim!r}")
        self.generator, self.discriminator = generator, discriminator
        self.latent_dim = int(latent_dim)
        self.g_optimizer = self.d_optimizer = None
        self.history = None

    @property
    def dtype(self):
        params = self.generator.parameters()
        return params[0].data.dtype if params else np.dtype(np.float32)

    def parameters(self):
        return list(self.generator.parameters()) + list(self.discriminator.parameters())

    def latent(self, n):
        """``n`` prior draws ``z ~ N(0, I)``, ``(n, latent_dim)``, from fastnn's generator."""
        return rng().standard_normal((int(n), self.latent_dim)).astype(self.dtype)

    def sample(self, n, z=None):
        """Generator output for ``n`` prior draws (or the given codes ``z``), inference mode."""
        if z is None:
            if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1:
                raise ValueError(f"{self._name}.sample: n must be an int >= 1, got {n!r}")
            z = self.latent(n)
        z = np.asarray(z)
        if z.ndim != 2 or z.shape[1] != self.latent_dim:
            raise ValueError(f"{self._name}(latent_dim={self.latent_dim}).sample: z must be "
                             f"(N, {self.latent_dim}), got {z.shape}")
        return self.generator.forward(np.ascontiguousarray(z, dtype=self.dtype), training=False)

    def _generate(self, n):
        z = self.latent(n)
        return self.generator.forward(z, training=True)

    def _check_real(self, where, X):
        if not isinstance(X, np.ndarray) or X.dtype.kind != "f" or X.ndim < 2 or len(X) == 0:
            raise ValueError(f"{self._name}.{where}: X must be a non-empty float array (N, ...), "
                             f"got {getattr(X, 'shape', type(X).__name__)}")
        return X

    def _make_optimizers(self, g_optimizer, d_optimizer):
        defaults = self.default_optimizers()
        for attr, given, params, default in (
                ("g_optimizer", g_optimizer, self.generator.parameters(), defaults[0]),
                ("d_optimizer", d_optimizer, self.discriminator.parameters(), defaults[1])):
            if given is None:
                given = getattr(self, attr) or default(params)
            elif isinstance(given, str):
                given = _optim.get(given, params)
            elif not (hasattr(given, "step") and hasattr(given, "zero_grad")):
                raise TypeError(f"{self._name}.fit: {attr} must be a fastnn optimizer, a name or "
                                f"None, got {type(given).__name__}")
            setattr(self, attr, given)

    def fit(self, X, epochs=10, batch_size=64, g_optimizer=None, d_optimizer=None, shuffle=True,
            verbose=1):
        """Train on real examples ``X (N, ...)``; returns a ``History`` whose ``history`` has one
        value per epoch of ``d_loss`` and ``g_loss`` (means over the epoch's steps), plus the
        model's extra logs.

        ``g_optimizer``/``d_optimizer``: optimizers over the generator's / discriminator's
        parameters, names, or None for :meth:`default_optimizers` (kept across ``fit`` calls).
        ``verbose``: 0 silent, 1 a tqdm bar showing both losses, 2 one line per epoch.
        """
        from ..model import History

        X = self._check_real("fit", X)
        for name, v in (("epochs", epochs), ("batch_size", batch_size)):
            if isinstance(v, bool) or not isinstance(v, (int, np.integer)) \
                    or v < (name == "batch_size"):
                raise ValueError(f"{self._name}.fit: {name} must be a non-negative int "
                                 f"(batch_size >= 1), got {v!r}")
        self._make_optimizers(g_optimizer, d_optimizer)
        history = History()
        self.history = history
        n = len(X)
        self._batch_index = 0
        for epoch in range(epochs):
            order = rng().permutation(n) if shuffle else np.arange(n)
            bar = _progress(verbose, n, f"epoch {epoch + 1}/{epochs}")
            sums = {}
            for start in range(0, n, batch_size):
                logs = self.train_step(X[order[start:start + batch_size]])
                for k, v in logs.items():
                    if not math.isfinite(v):
                        raise FloatingPointError(
                            f"{self._name}.fit: {k} became {v} at epoch {epoch + 1}, batch "
                            f"{start // batch_size + 1}; lower the learning rates")
                    total, count = sums.get(k, (0.0, 0))
                    sums[k] = (total + v, count + 1)
                if bar is not None:
                    bar.update(min(batch_size, n - start))
                    bar.set_postfix_str("  ".join(f"{k}={t / c:.4f}" for k, (t, c) in sums.items()
                                                  if k in self._logs), refresh=False)
            logs = {k: t / c for k, (t, c) in sums.items()}
            if bar is not None:
                bar.set_postfix_str("  ".join(f"{k}={v:.4f}" for k, v in logs.items()))
                bar.close()
            elif verbose == 2:
                print(f"epoch {epoch + 1}/{epochs}  " +
                      "  ".join(f"{k}={v:.4g}" for k, v in logs.items()), file=sys.stderr)
            history._append(epoch, logs)
        return history

    def __repr__(self):
        return (f"{self._name}(latent_dim={self.latent_dim},\n  generator={self.generator!r},\n"
                f"  discriminator={self.discriminator!r})")


class GAN(_Adversarial):
    """Generative adversarial network trained by alternating updates (Goodfellow et al., 2014):

        discriminator step:  minimise  BCE(D(x), 1) + BCE(D(G(z)), 0)     (G held fixed)
        generator step:      minimise  BCE(D(G(z)), 1)                      (D held fixed)

    The generator step uses the non-saturating loss ``-log D(G(z))``; gradients flow through the
    discriminator into the generator, and only the generator's optimizer steps (the
    discriminator's parameters are not changed; its batch-norm running statistics are, as in
    PyTorch's training mode). One generated batch serves both steps, as in PyTorch's DCGAN
    example: the generator step re-evaluates it with the updated discriminator.

    Args:
        generator: a model mapping ``z (N, latent_dim)`` to an example's shape (for images,
            start with ``Reshape((latent_dim, 1, 1))`` before transposed convolutions).
        discriminator: a model mapping examples to ``(N, 1)`` logits (``loss="bce_with_logits"``,
            the stable default) or probabilities (a final Sigmoid and ``loss="bce"``).
        latent_dim: size of the code ``z``; the prior is ``N(0, I)``.
        loss: ``"bce_with_logits"`` or ``"bce"``.

    Default optimizers: ``Adam(lr=2e-4, betas=(0.5, 0.999))`` for both networks (DCGAN's).

    Example::

        G, D = fnn.models.dcgan(latent_dim=32, image_size=16)
        gan = fnn.models.GAN(G, D, latent_dim=32)
        history = gan.fit(X, epochs=20, batch_size=64)    # X in [-1, 1] for a Tanh generator
        images = gan.sample(64)
    """

    def __init__(self, generator, discriminator, latent_dim, loss="bce_with_logits"):
        super().__init__(generator, discriminator, latent_dim)
        if loss not in ("bce_with_logits", "bce"):
            raise ValueError(f"GAN: loss must be 'bce_with_logits' (discriminator gives logits) "
                             f"or 'bce' (it ends in a Sigmoid), got {loss!r}")
        self.loss = loss
        self._loss_fn = _losses.get(loss)

    @staticmethod
    def default_optimizers():
        adam = lambda params: _optim.Adam(params, lr=2e-4, betas=(0.5, 0.999))
        return adam, adam

    def _bce(self, out, label):
        """Loss of discriminator outputs against a constant label, and d loss / d out."""
        target = np.full(out.shape, label, dtype=out.dtype)
        value = self._loss_fn.forward(out, target)
        return value, self._loss_fn.backward()

    def discriminator_loss(self, real, fake, training=True, backward=False):
        """``BCE(D(real), 1) + BCE(D(fake), 0)``; with ``backward`` the gradient is accumulated
        into the discriminator's parameters (each half is back-propagated right after its own
        forward, so layer caches stay valid). Returns ``(loss, mean D(real), mean D(fake))``
        with D as a probability."""
        values, means = [], []
        for batch, label in ((real, 1.0), (fake, 0.0)):
            out = self.discriminator.forward(batch, training=training)
            value, dout = self._bce(out, label)
            if backward:
                self.discriminator.backward(dout)
            values.append(value)
            prob = 1.0 / (1.0 + np.exp(-out.astype(np.float64))) if self.loss == "bce_with_logits" \
                else out
            means.append(float(np.mean(prob)))
        return values[0] + values[1], means[0], means[1]

    def generator_loss(self, z=None, fake=None, training=True, backward=False):
        """Non-saturating generator loss ``BCE(D(G(z)), 1)``. With ``backward`` the gradient goes
        through the discriminator into the generator's parameters' ``.grad`` (the
        discriminator's ``.grad`` is left zeroed). Pass ``fake`` to reuse a batch the generator
        has just produced (its forward caches must still be the ones that made it)."""
        if fake is None:
            if z is None:
                raise ValueError("GAN.generator_loss: give z or fake")
            fake = self.generator.forward(np.ascontiguousarray(z, dtype=self.dtype),
                                          training=training)
        out = self.discriminator.forward(fake, training=training)
        value, dout = self._bce(out, 1.0)
        if backward:
            dfake = self.discriminator.backward(dout)
            _zero(self.discriminator.parameters())
            self.generator.backward(dfake)
        return value

    def discriminator_step(self, real, fake):
        """One discriminator update on a real and a generated batch (the generator is not
        touched); returns ``(d_loss, mean D(real), mean D(fake))``."""
        if self.d_optimizer is None:
            self._make_optimizers(None, None)
        _zero(self.discriminator.parameters())
        values = self.discriminator_loss(real, fake, backward=True)
        self.d_optimizer.step()
        return values

    def generator_step(self, z=None, fake=None):
        """One generator update through the fixed discriminator (its parameters are not
        stepped); returns the generator loss. ``fake`` must be the generator's last output."""
        if self.g_optimizer is None:
            self._make_optimizers(None, None)
        _zero(self.generator.parameters())
        value = self.generator_loss(z=z, fake=fake, backward=True)
        self.g_optimizer.step()
        return value

    def train_step(self, real):
        """One discriminator update and one generator update on a real batch; returns
        ``{"d_loss", "g_loss", "d_real", "d_fake"}`` (``d_*``: mean D output as probability)."""
        fake = self._generate(len(real))
        d_loss, d_real, d_fake = self.discriminator_step(real, fake)
        g_loss = self.generator_step(fake=fake)
        return {"d_loss": d_loss, "g_loss": g_loss, "d_real": d_real, "d_fake": d_fake}


class WGAN(_Adversarial):
    """Wasserstein GAN with weight clipping (Arjovsky, Chintala and Bottou, 2017):

        critic step (n_critic per generator step):
            minimise  mean(C(G(z))) - mean(C(x)),  then clip every critic parameter to [-c, c]
        generator step:
            minimise  -mean(C(G(z)))                                   (C held fixed)

    The critic outputs an unbounded score ``(N, 1)`` (no Sigmoid). ``-d_loss`` estimates the
    Wasserstein-1 distance (up to the Lipschitz constant the clipping imposes); it is logged as
    ``wasserstein``. Every critic step consumes one real batch, so ``fit`` makes one generator
    step per ``n_critic`` batches.

    Args:
        generator, critic: models as for :class:`GAN` (the critic without a final Sigmoid).
        latent_dim: size of ``z``.
        clip_value: ``c``, 0.01 by default.
        n_critic: critic steps per generator step, 5 by default.

    Default optimizers: ``RMSProp(lr=5e-5)`` for both networks (the paper's).
    """

    _name = "WGAN"

    def __init__(self, generator, critic, latent_dim, clip_value=0.01, n_critic=5):
        super().__init__(generator, critic, latent_dim)
        if not (isinstance(clip_value, (int, float, np.number)) and clip_value > 0):
            raise ValueError(f"WGAN: clip_value must be > 0, got {clip_value!r}")
        if isinstance(n_critic, bool) or not isinstance(n_critic, (int, np.integer)) \
                or n_critic < 1:
            raise ValueError(f"WGAN: n_critic must be an int >= 1, got {n_critic!r}")
        self.clip_value, self.n_critic = float(clip_value), int(n_critic)
        self._batch_index = 0
        # the critic starts inside the clipping box, as every later step leaves it
        _optim.clip_weights(critic.parameters(), self.clip_value)

    @property
    def critic(self):
        return self.discriminator

    @staticmethod
    def default_optimizers():
        rmsprop = lambda params: _optim.RMSProp(params, lr=5e-5)
        return rmsprop, rmsprop

    def critic_loss(self, real, fake, training=True, backward=False):
        """``mean(C(fake)) - mean(C(real))``; with ``backward`` the gradient is accumulated
        into the critic's parameters."""
        value = 0.0
        for batch, sign in ((real, -1.0), (fake, 1.0)):
            out = self.critic.forward(batch, training=training)
            value += sign * float(np.mean(out, dtype=np.float64))
            if backward:
                self.critic.backward(np.full(out.shape, sign / out.size, dtype=out.dtype))
        return value

    def generator_loss(self, z=None, fake=None, training=True, backward=False):
        """``-mean(C(G(z)))``; with ``backward`` the gradient goes through the critic into the
        generator's ``.grad`` (the critic's ``.grad`` is left zeroed)."""
        if fake is None:
            if z is None:
                raise ValueError("WGAN.generator_loss: give z or fake")
            fake = self.generator.forward(np.ascontiguousarray(z, dtype=self.dtype),
                                          training=training)
        out = self.critic.forward(fake, training=training)
        value = -float(np.mean(out, dtype=np.float64))
        if backward:
            dfake = self.critic.backward(np.full(out.shape, -1.0 / out.size, dtype=out.dtype))
            _zero(self.critic.parameters())
            self.generator.backward(dfake)
        return value

    def critic_step(self, real):
        """One critic update on a real batch followed by weight clipping; returns the loss."""
        if self.d_optimizer is None:
            self._make_optimizers(None, None)
        params = self.critic.parameters()
        fake = self._generate(len(real))
        _zero(params)
        value = self.critic_loss(real, fake, backward=True)
        self.d_optimizer.step()
        _optim.clip_weights(params, self.clip_value)
        return value

    def generator_step(self, n):
        """One generator update on ``n`` fresh codes; returns the generator loss."""
        if self.g_optimizer is None:
            self._make_optimizers(None, None)
        _zero(self.generator.parameters())
        fake = self._generate(n)
        value = self.generator_loss(fake=fake, backward=True)
        self.g_optimizer.step()
        return value

    def train_step(self, real):
        """One critic step on ``real``; every ``n_critic``-th call also one generator step.
        Returns ``{"d_loss", "wasserstein"}`` and, on generator steps, ``"g_loss"``."""
        d_loss = self.critic_step(real)
        logs = {"d_loss": d_loss, "wasserstein": -d_loss}
        self._batch_index += 1
        if self._batch_index % self.n_critic == 0:
            logs["g_loss"] = self.generator_step(len(real))
        return logs


# --- the DCGAN architecture ---------------------------------------------------------------------------
def dcgan_init(model):
    """DCGAN's initialisation, in place: convolution, transposed-convolution and dense weights
    ``N(0, 0.02)``, batch-norm weights ``N(1, 0.02)``, every bias 0. Returns ``model``."""
    for name, p in model.named_parameters():
        shape, dtype = p.data.shape, p.data.dtype
        if name.endswith("bias"):
            p.data[...] = 0
        elif p.data.ndim == 1:  # a batch-norm scale
            p.data[...] = rng().normal(1.0, 0.02, shape).astype(dtype)
        else:
            p.data[...] = rng().normal(0.0, 0.02, shape).astype(dtype)
    return model


def dcgan(latent_dim, image_size=16, channels=1, features=32):
    """Generator and discriminator following the DCGAN guidelines (Radford et al., 2016), for
    square images of side ``image_size`` (a power of two, >= 8):

    - generator: ``Reshape((latent_dim, 1, 1))``, ``ConvTranspose2D(k=4)`` to 4x4, then
      stride-2 ``ConvTranspose2D(k=4, p=1)`` layers doubling the side, BatchNorm and ReLU after
      every layer but the last, Tanh output (so the data should be scaled to ``[-1, 1]``);
    - discriminator: stride-2 ``Conv2D(k=4, p=1)`` layers halving the side down to 4x4, with
      LeakyReLU(0.2) and BatchNorm after all but the first, no pooling, then ``Conv2D(k=4)`` to
      one logit per image (``(N, 1)`` after Flatten; use ``GAN(loss="bce_with_logits")``);
    - weights ``N(0, 0.02)`` (:func:`dcgan_init`); train with ``Adam(lr=2e-4,
      betas=(0.5, 0.999))``, :class:`GAN`'s default.

    ``features`` is the width of the discriminator's first layer and of the generator's last
    hidden layer; widths double toward the 4x4 end.
    Returns ``(generator, discriminator)`` as ``Sequential`` models.
    """
    from .. import layers as L
    from ..model import Sequential

    if isinstance(image_size, bool) or not isinstance(image_size, (int, np.integer)) \
            or image_size < 8 or image_size & (image_size - 1):
        raise ValueError(f"dcgan: image_size must be a power of two >= 8, got {image_size!r}")
    stages = int(math.log2(image_size)) - 2  # stride-2 layers between 4x4 and the full size
    widths = [features * 2 ** i for i in range(stages)]  # at sides image_size/2, /4, ..., 8

    g_layers = [L.Reshape((latent_dim, 1, 1)), L.ConvTranspose2D(latent_dim, widths[-1], 4,
                                                                  bias=False),
                L.BatchNorm2D(widths[-1]), L.ReLU()]
    for cin, cout in zip(widths[::-1], widths[::-1][1:]):
        g_layers += [L.ConvTranspose2D(cin, cout, 4, stride=2, padding=1, bias=False),
                     L.BatchNorm2D(cout), L.ReLU()]
    g_layers += [L.ConvTranspose2D(widths[0], channels, 4, stride=2, padding=1), L.Tanh()]

    d_layers = [L.Conv2D(channels, widths[0], 4, stride=2, padding=1), L.LeakyReLU(0.2)]
    for cin, cout in zip(widths, widths[1:]):
        d_layers += [L.Conv2D(cin, cout, 4, stride=2, padding=1, bias=False),
                     L.BatchNorm2D(cout), L.LeakyReLU(0.2)]
    d_layers += [L.Conv2D(widths[-1], 1, 4), L.Flatten()]
    return dcgan_init(Sequential(*g_layers)), dcgan_init(Sequential(*d_layers))

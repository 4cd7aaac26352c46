"""VAE, GAN, WGAN and the denoising autoencoder (fastnn/models/vae.py, gan.py,
fastnn/recipes/generative.py)."""
import numpy as np
import pytest

import fastnn as fnn
from fastnn import layers as L
from fastnn._imaging import psnr
from fastnn.models.gan import GAN, WGAN, dcgan
from fastnn.models.vae import VAE


def _numeric_param_grads(loss_of, params, h=1e-6):
    """Central differences of the scalar ``loss_of()`` with respect to every parameter entry."""
    grads = []
    for p in params:
        g = np.zeros_like(p.data)
        flat, gflat = p.data.reshape(-1), g.reshape(-1)
        for i in range(flat.size):
            old = flat[i]
            flat[i] = old + h
            up = loss_of()
            flat[i] = old - h
            down = loss_of()
            flat[i] = old
            gflat[i] = (up - down) / (2 * h)
        grads.append(g)
    return grads


def _assert_grads_close(params, numeric, rtol=1e-5, atol=1e-7):
    for p, g in zip(params, numeric):
        np.testing.assert_allclose(p.grad, g, rtol=rtol, atol=atol, err_msg=p.name)


def _mlp(*sizes, hidden=L.Tanh, out=None):
    layers = []
    for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:])):
        layers.append(L.Dense(a, b))
        if i < len(sizes) - 2:
            layers.append(hidden())
    if out is not None:
        layers.append(out())
    return fnn.Sequential(*layers)


# --- VAE ---------------------------------------------------------------------------------------------
def _small_vae(reconstruction="bce", kl_weight=0.7, latent=3):
    fnn.seed(0)
    out = L.Sigmoid if reconstruction == "bce" else None
    encoder = _mlp(6, 8, 2 * latent).astype(np.float64)
    decoder = _mlp(latent, 8, 6, out=out).astype(np.float64)
    return VAE(encoder, decoder, latent_dim=latent, kl_weight=kl_weight,
               reconstruction=reconstruction)


@pytest.mark.parametrize("reconstruction", ["bce", "mse", "bce_with_logits"])
def test_vae_gradients_match_central_differences_through_sampling(reconstruction):
    vae = _small_vae(reconstruction)
    rng = np.random.default_rng(1)
    x = rng.random((5, 6))
    eps = rng.standard_normal((5, 3))
    vae.zero_grad()
    vae.loss(x, eps=eps)
    vae.backward()
    params = vae.parameters()
    numeric = _numeric_param_grads(lambda: vae.loss(x, eps=eps)[0], params)
    _assert_grads_close(params, numeric)


def test_vae_reparameterisation_and_loss_terms():
    vae = _small_vae("mse", kl_weight=0.25)
    x = np.random.default_rng(2).random((4, 6))
    eps = np.random.default_rng(3).standard_normal((4, 3))
    x_hat, mu, logvar = vae.forward(x, eps=eps)
    # z = mu + exp(logvar / 2) * eps: decoding that z by hand gives the same output
    np.testing.assert_allclose(x_hat, vae.decode(mu + np.exp(logvar / 2) * eps), rtol=1e-12)
    # eps = 0 decodes the posterior mean (the deterministic reconstruction)
    np.testing.assert_allclose(vae.forward(x, eps=np.zeros((4, 3)))[0], vae.reconstruct(x),
                               rtol=1e-12)
    loss, rec, kl = vae.loss(x, eps=eps)
    kl_closed = np.mean(-0.5 * np.sum(1 + logvar - mu ** 2 - np.exp(logvar), axis=1))
    assert kl == pytest.approx(kl_closed, rel=1e-10)
    # reconstruction: squared error summed over an example's features, mean over the batch
    assert rec == pytest.approx(np.mean(np.sum((x_hat - x) ** 2, axis=1)), rel=1e-10)
    assert loss == pytest.approx(rec + 0.25 * kl, rel=1e-12)


def test_vae_rejects_wrong_encoder_width_and_eps_shape():
    encoder = _mlp(6, 5)  # 5 != 2 * latent_dim
    vae = VAE(encoder, _mlp(3, 6, out=L.Sigmoid), latent_dim=3)
    with pytest.raises(ValueError, match=r"encoder must output \(N, 6\).*\(2, 5\)"):
        vae.forward(np.zeros((2, 6), dtype=np.float32))
    vae = _small_vae()
    with pytest.raises(ValueError, match=r"eps must be \(2, 3\), got \(2, 4\)"):
        vae.forward(np.zeros((2, 6)), eps=np.zeros((2, 4)))
    with pytest.raises(ValueError, match="reconstruction"):
        VAE(_mlp(6, 6), _mlp(3, 6), latent_dim=3, reconstruction="l1")


def test_vae_fit_lowers_the_loss_and_samples_decode_prior_draws():
    fnn.seed(0)
    rng = np.random.default_rng(4)
    # two clusters of binary-ish patterns in 16 dimensions
    prototypes = (rng.random((2, 16)) > 0.5).astype(np.float32)
    X = np.clip(prototypes[rng.integers(0, 2, 256)] + 0.1 * rng.standard_normal((256, 16)),
                0, 1).astype(np.float32)
    vae = VAE(_mlp(16, 32, 4, hidden=L.ReLU), _mlp(2, 32, 16, hidden=L.ReLU, out=L.Sigmoid),
              latent_dim=2)
    history = vae.fit(X, epochs=15, batch_size=32, optimizer=fnn.optim.Adam(vae.parameters(),
                                                                          lr=3e-3), verbose=0)
    losses = history.history["loss"]
    assert len(losses) == 15 and set(history.history) >= {"loss", "reconstruction", "kl"}
    assert losses[-1] < 0.6 * losses[0]
    samples = vae.sample(7)
    assert samples.shape == (7, 16) and samples.dtype == np.float32
    assert ((samples >= 0) & (samples <= 1)).all()
    # the reconstruction beats predicting the mean pattern
    rec = vae.reconstruct(X)
    assert np.mean((rec - X) ** 2) < 0.5 * np.mean((X.mean(0) - X) ** 2)
    mu, logvar = vae.encode(X[:5])
    assert mu.shape == logvar.shape == (5, 2)


# --- GAN ---------------------------------------------------------------------------------------------
def _small_gan(cls=GAN, **kwargs):
    fnn.seed(0)
    generator = _mlp(3, 7, 5, out=L.Tanh).astype(np.float64)
    discriminator = fnn.Sequential(L.Dense(5, 6), L.LeakyReLU(0.2), L.Dense(6, 1)).astype(np.float64)
    return cls(generator, discriminator, latent_dim=3, **kwargs)


@pytest.mark.parametrize("cls", [GAN, WGAN])
def test_generator_gradient_through_the_discriminator(cls):
    gan = _small_gan(cls)
    z = np.random.default_rng(5).standard_normal((6, 3))
    gan.generator.zero_grad()
    gan.generator_loss(z, backward=True)
    params = gan.generator.parameters()
    numeric = _numeric_param_grads(lambda: gan.generator_loss(z), params)
    _assert_grads_close(params, numeric)
    # the discriminator's gradients are cleared, so nothing of the generator step leaks into it
    assert all(not p.grad.any() for p in gan.discriminator.parameters())


def test_discriminator_gradient_matches_central_differences():
    gan = _small_gan(GAN)
    rng = np.random.default_rng(6)
    real, fake = rng.uniform(-1, 1, (4, 5)), rng.uniform(-1, 1, (4, 5))
    gan.discriminator.zero_grad()
    gan.discriminator_loss(real, fake, backward=True)
    params = gan.discriminator.parameters()
    numeric = _numeric_param_grads(lambda: gan.discriminator_loss(real, fake)[0], params)
    _assert_grads_close(params, numeric)


def test_discriminator_loss_uses_targets_one_for_real_and_zero_for_fake():
    gan = _small_gan(GAN)
    rng = np.random.default_rng(7)
    real, fake = rng.uniform(-1, 1, (4, 5)), rng.uniform(-1, 1, (4, 5))
    logits_real = gan.discriminator.forward(real)
    logits_fake = gan.discriminator.forward(fake)
    softplus = lambda t: np.logaddexp(0, t)
    expected = np.mean(softplus(-logits_real)) + np.mean(softplus(logits_fake))
    assert gan.discriminator_loss(real, fake)[0] == pytest.approx(expected, rel=1e-10)
    z = rng.standard_normal((4, 3))
    non_saturating = np.mean(softplus(-gan.discriminator.forward(gan.generator.forward(z))))
    assert gan.generator_loss(z) == pytest.approx(non_saturating, rel=1e-10)


def test_generator_step_leaves_the_discriminator_unchanged():
    gan = _small_gan(GAN)
    z = np.random.default_rng(8).standard_normal((6, 3))
    d_before = [p.data.copy() for p in gan.discriminator.parameters()]
    g_before = [p.data.copy() for p in gan.generator.parameters()]
    gan.generator_step(z)
    for p, before in zip(gan.discriminator.parameters(), d_before):
        np.testing.assert_array_equal(p.data, before, err_msg=p.name)
    assert any(not np.array_equal(p.data, b) for p, b in zip(gan.generator.parameters(), g_before))
    # and the discriminator step leaves the generator alone
    g_before = [p.data.copy() for p in gan.generator.parameters()]
    real = np.random.default_rng(9).uniform(-1, 1, (6, 5))
    gan.discriminator_step(real, gan.generator.forward(z))
    for p, before in zip(gan.generator.parameters(), g_before):
        np.testing.assert_array_equal(p.data, before, err_msg=p.name)
    assert any(not np.array_equal(p.data, b) for p, b in zip(gan.discriminator.parameters(), d_before))


def test_gan_fit_reports_both_losses_and_learns_a_shifted_gaussian():
    fnn.seed(0)
    rng = np.random.default_rng(10)
    real = (0.5 + 0.1 * rng.standard_normal((512, 2))).astype(np.float32)  # in (-1, 1)
    gan = GAN(_mlp(2, 16, 2, hidden=L.ReLU, out=L.Tanh),
              fnn.Sequential(L.Dense(2, 16), L.LeakyReLU(0.2), L.Dense(16, 1)), latent_dim=2)
    history = gan.fit(real, epochs=30, batch_size=64, verbose=0,
                      g_optimizer=fnn.optim.Adam(gan.generator.parameters(), 2e-3, (0.5, 0.999)),
                      d_optimizer=fnn.optim.Adam(gan.discriminator.parameters(), 2e-3, (0.5, 0.999)))
    assert len(history.history["d_loss"]) == len(history.history["g_loss"]) == 30
    assert all(np.isfinite(history.history["d_loss"])) and all(np.isfinite(history.history["g_loss"]))
    samples = gan.sample(500)
    assert samples.shape == (500, 2)
    # started near 0 (small Tanh outputs); the generated mean moved to the data's 0.5
    np.testing.assert_allclose(samples.mean(0), 0.5, atol=0.15)


# --- WGAN --------------------------------------------------------------------------------------------
def test_wgan_clipping_keeps_critic_weights_in_the_box():
    c = 0.01
    gan = _small_gan(WGAN, clip_value=c, n_critic=3)
    for p in gan.critic.parameters():
        assert np.abs(p.data).max() <= c
    real = np.random.default_rng(11).uniform(-1, 1, (60, 5))
    # a large learning rate pushes weights hard against the box
    gan.fit(real, epochs=2, batch_size=10, verbose=0,
            d_optimizer=fnn.optim.RMSProp(gan.critic.parameters(), lr=0.05))
    values = np.concatenate([p.data.reshape(-1) for p in gan.critic.parameters()])
    assert np.abs(values).max() <= c
    assert np.isclose(np.abs(values), c).mean() > 0.5  # the clipping did act


def test_wgan_runs_n_critic_critic_steps_per_generator_step(monkeypatch):
    gan = _small_gan(WGAN, n_critic=5)
    calls = []
    monkeypatch.setattr(gan, "generator_step", lambda n: calls.append(n) or 0.0)
    real = np.random.default_rng(12).uniform(-1, 1, (100, 5))
    history = gan.fit(real, epochs=1, batch_size=10, verbose=0)  # 10 critic steps
    assert calls == [10, 10]
    assert history.history["wasserstein"][0] == pytest.approx(-history.history["d_loss"][0])


def test_wgan_critic_loss_and_gradient():
    gan = _small_gan(WGAN)
    for p in gan.critic.parameters():  # leave the box, so the check sees generic weights
        p.data[...] = np.random.default_rng(13).standard_normal(p.data.shape)
    rng = np.random.default_rng(14)
    real, fake = rng.uniform(-1, 1, (4, 5)), rng.uniform(-1, 1, (4, 5))
    expected = np.mean(gan.critic.forward(fake)) - np.mean(gan.critic.forward(real))
    gan.critic.zero_grad()
    assert gan.critic_loss(real, fake, backward=True) == pytest.approx(expected, rel=1e-12)
    params = gan.critic.parameters()
    _assert_grads_close(params, _numeric_param_grads(lambda: gan.critic_loss(real, fake), params))


# --- DCGAN architecture ---------------------------------------------------------------------------------
@pytest.mark.parametrize("size", [8, 16])
def test_dcgan_shapes_and_init(size):
    fnn.seed(0)
    G, D = dcgan(latent_dim=10, image_size=size, features=8)
    z = np.random.default_rng(15).standard_normal((3, 10)).astype(np.float32)
    images = G.forward(z)
    assert images.shape == (3, 1, size, size) and np.abs(images).max() <= 1
    assert D.forward(images).shape == (3, 1)
    names = [type(layer).__name__ for layer in D]
    assert "MaxPool2D" not in names and "AvgPool2D" not in names
    weights = [p.data for name, p in G.named_parameters() + D.named_parameters()
               if name.endswith("weight") and p.data.ndim == 4]
    assert 0.015 < np.std(np.concatenate([w.reshape(-1) for w in weights])) < 0.025
    with pytest.raises(ValueError, match="power of two"):
        dcgan(10, image_size=12)


# --- denoising autoencoder smoke run ------------------------------------------------------------------
def test_denoising_autoencoder_beats_the_noisy_input():
    from fastnn.datasets import load_digits
    from fastnn.recipes.generative import train_denoising_autoencoder

    fnn.seed(0)
    (X, _), (Xt, _) = load_digits(return_split=True, test_size=0.25, seed=0)
    model, metrics, (noisy, restored) = train_denoising_autoencoder(X, Xt, epochs=10, copies=4)
    assert restored.shape == Xt.shape
    # the metrics are the ones of the returned images
    assert metrics["noisy_psnr"] == pytest.approx(psnr(noisy, Xt, 1.0))
    assert metrics["denoised_psnr"] >= metrics["noisy_psnr"] + 2.5
    assert metrics["denoised_ssim"] > metrics["noisy_ssim"]


@pytest.mark.parametrize("build, parts", [(_small_vae, ("encoder", "decoder")),
                                          (_small_gan, ("generator", "discriminator")),
                                          (lambda: _small_gan(WGAN), ("generator", "discriminator"))])
def test_state_dict_nests_the_parts_and_round_trips(build, parts):
    model = build()
    sd = model.state_dict()
    for part in parts:
        own = getattr(model, part).state_dict()
        assert own
        for k, v in own.items():
            np.testing.assert_array_equal(sd[f"{part}.{k}"], v)
    assert len(sd) == sum(len(getattr(model, p).state_dict()) for p in parts)
    saved = {k: v.copy() for k, v in sd.items()}
    other = build()
    for part in parts:
        for p in getattr(other, part).parameters():
            p.data[...] = 0
    other.load_state_dict(saved)
    for key, value in other.state_dict().items():
        np.testing.assert_array_equal(value, saved[key])
    with pytest.raises(KeyError, match=rf"{type(model).__name__}\.load_state_dict: unexpected key 'critic\.w'"):
        other.load_state_dict({**saved, "critic.w": np.zeros(1)})

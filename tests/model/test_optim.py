"""Optimizer trajectories against PyTorch's update rules written out by hand, state round trips,
learning-rate changes and gradient clipping."""
import math

import numpy as np
import pytest

from fastnn import _core, optim
from fastnn.layers import Parameter

DTYPES = [np.float32, np.float64]
STEPS = 6


def quadratic_grad(p, step):
    """A gradient that depends on the parameter and on the step, so trajectories differ."""
    return (p - 0.5) * (1.0 + 0.1 * step) + 0.05 * np.sin(np.arange(p.size).reshape(p.shape) + step)


def run_fastnn(make, dtype, steps=STEPS, lr_schedule=None):
    r = np.random.default_rng(0)
    params = [Parameter("a", r.normal(size=(3, 4)).astype(dtype)), Parameter("b", r.normal(size=5).astype(dtype))]
    opt = make(params)
    for step in range(steps):
        if lr_schedule is not None:
            opt.lr = lr_schedule(step)
        opt.zero_grad()
        for p in params:
            p.grad += quadratic_grad(p.data, step).astype(dtype)
        opt.step()
    return [p.data for p in params], opt


def run_formula(update, steps=STEPS, lr_schedule=None):
    """The same trajectory in float64 with PyTorch's rule written as plain NumPy."""
    r = np.random.default_rng(0)
    params = [r.normal(size=(3, 4)), r.normal(size=5)]
    states = [dict() for _ in params]
    for step in range(steps):
        for i, p in enumerate(params):
            g = quadratic_grad(p, step)
            params[i] = update(p, g, states[i], step + 1, None if lr_schedule is None else lr_schedule(step))
    return params


def sgd_rule(lr, momentum=0.0, dampening=0.0, nesterov=False, weight_decay=0.0):
    def update(p, g, s, t, lr_now):
        g = g + weight_decay * p
        if momentum:
            s["buf"] = g.copy() if t == 1 else momentum * s["buf"] + (1 - dampening) * g
            g = g + momentum * s["buf"] if nesterov else s["buf"]
        return p - (lr_now or lr) * g
    return update


def adagrad_rule(lr, lr_decay=0.0, weight_decay=0.0, eps=1e-10):
    def update(p, g, s, t, lr_now):
        g = g + weight_decay * p
        clr = (lr_now or lr) / (1 + (t - 1) * lr_decay)
        s["sum"] = s.get("sum", 0) + g * g
        return p - clr * g / (np.sqrt(s["sum"]) + eps)
    return update


def rmsprop_rule(lr, alpha=0.99, eps=1e-8, weight_decay=0.0):
    def update(p, g, s, t, lr_now):
        g = g + weight_decay * p
        s["v"] = alpha * s.get("v", 0) + (1 - alpha) * g * g
        return p - (lr_now or lr) * g / (np.sqrt(s["v"]) + eps)
    return update


def adam_rule(lr, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0, decoupled=False):
    b1, b2 = betas

    def update(p, g, s, t, lr_now):
        lr_t = lr_now or lr
        if decoupled:
            p = p * (1 - lr_t * weight_decay)
        else:
            g = g + weight_decay * p
        s["m"] = b1 * s.get("m", 0) + (1 - b1) * g
        s["v"] = b2 * s.get("v", 0) + (1 - b2) * g * g
        m_hat, v_hat = s["m"] / (1 - b1 ** t), s["v"] / (1 - b2 ** t)
        return p - lr_t * m_hat / (np.sqrt(v_hat) + eps)
    return update


CASES = {
    "sgd": (lambda ps: optim.SGD(ps, lr=0.1), sgd_rule(0.1)),
    "sgd-momentum-wd": (lambda ps: optim.SGD(ps, lr=0.05, momentum=0.9, weight_decay=1e-2),
                        sgd_rule(0.05, momentum=0.9, weight_decay=1e-2)),
    "sgd-dampening": (lambda ps: optim.SGD(ps, lr=0.05, momentum=0.8, dampening=0.3),
                      sgd_rule(0.05, momentum=0.8, dampening=0.3)),
    "sgd-nesterov": (lambda ps: optim.SGD(ps, lr=0.05, momentum=0.9, nesterov=True),
                     sgd_rule(0.05, momentum=0.9, nesterov=True)),
    "adagrad": (lambda ps: optim.AdaGrad(ps), adagrad_rule(1e-2)),
    "adagrad-decay-wd": (lambda ps: optim.AdaGrad(ps, lr=0.1, lr_decay=0.05, weight_decay=0.1),
                         adagrad_rule(0.1, lr_decay=0.05, weight_decay=0.1)),
    "rmsprop": (lambda ps: optim.RMSProp(ps), rmsprop_rule(1e-2)),
    "rmsprop-wd": (lambda ps: optim.RMSProp(ps, lr=3e-3, alpha=0.9, eps=1e-6, weight_decay=0.1),
                   rmsprop_rule(3e-3, alpha=0.9, eps=1e-6, weight_decay=0.1)),
    "adam": (lambda ps: optim.Adam(ps), adam_rule(1e-3)),
    "adam-wd": (lambda ps: optim.Adam(ps, lr=0.05, betas=(0.8, 0.95), eps=1e-6, weight_decay=0.1),
                adam_rule(0.05, betas=(0.8, 0.95), eps=1e-6, weight_decay=0.1)),
    "adamw": (lambda ps: optim.AdamW(ps, lr=0.05), adam_rule(0.05, weight_decay=1e-2, decoupled=True)),
}


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", sorted(CASES))
def test_trajectory_matches_pytorch_rule(case, dtype):
    make, rule = CASES[case]
    got, _ = run_fastnn(make, dtype)
    expected = run_formula(rule)
    tol = dict(rtol=1e-4, atol=1e-5) if dtype == np.float32 else dict(rtol=1e-10, atol=1e-12)
    for g, e in zip(got, expected):
        assert g.dtype == dtype
        np.testing.assert_allclose(g, e, **tol)


def test_defaults_are_pytorchs():
    p = [Parameter("w", np.zeros(2, dtype=np.float32))]
    adam, adamw = optim.Adam(p), optim.AdamW(p)
    assert (adam.lr, adam.betas, adam.eps, adam.weight_decay) == (1e-3, (0.9, 0.999), 1e-8, 0.0)
    assert (adamw.lr, adamw.weight_decay) == (1e-3, 1e-2)
    ada, rms = optim.AdaGrad(p), optim.RMSProp(p)
    assert (ada.lr, ada.lr_decay, ada.weight_decay, ada.eps) == (1e-2, 0.0, 0.0, 1e-10)
    assert (rms.lr, rms.alpha, rms.eps, rms.weight_decay) == (1e-2, 0.99, 1e-8, 0.0)


@pytest.mark.parametrize("case", ["sgd-momentum-wd", "adagrad-decay-wd", "rmsprop", "adam-wd", "adamw"])
def test_lr_attribute_changes_take_effect(case):
    make, rule = CASES[case]
    schedule = lambda step: 0.05 * 0.5 ** step  # noqa: E731
    got, _ = run_fastnn(make, np.float64, lr_schedule=schedule)
    expected = run_formula(rule, lr_schedule=schedule)
    for g, e in zip(got, expected):
        np.testing.assert_allclose(g, e, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("case", ["sgd-nesterov", "adagrad-decay-wd", "rmsprop-wd", "adam-wd", "adamw"])
def test_state_dict_resumes_the_same_trajectory(case):
    make, _ = CASES[case]
    straight, _ = run_fastnn(make, np.float64, steps=6)
    # 3 steps, then a fresh optimizer on copies of the parameters picks up from the saved state
    first, opt = run_fastnn(make, np.float64, steps=3)
    sd = opt.state_dict()
    params = [Parameter(p.name, p.data.copy()) for p in opt.params]
    resumed = make(params)
    resumed.load_state_dict(sd)
    for step in range(3, 6):
        resumed.zero_grad()
        for p in params:
            p.grad += quadratic_grad(p.data, step)
        resumed.step()
    for p, s in zip(params, straight):
        np.testing.assert_array_equal(p.data, s)
    # the saved state is a copy, not a view of the live buffers
    assert all(isinstance(v, (int, np.ndarray)) for entry in sd["state"] for v in entry.values())


def test_load_state_dict_rejects_mismatches():
    p = [Parameter("w", np.zeros(3))]
    opt = optim.Adam(p)
    opt.step()
    with pytest.raises(ValueError, match="from a Adam optimizer"):
        optim.SGD(p, lr=0.1).load_state_dict(opt.state_dict())
    with pytest.raises(ValueError, match="shape"):
        optim.Adam([Parameter("w", np.zeros(4))]).load_state_dict(opt.state_dict())
    with pytest.raises(ValueError, match="2 parameters"):
        optim.Adam(p).load_state_dict({**opt.state_dict(), "state": [{}, {}]})


def test_state_follows_a_dtype_change():
    p = Parameter("w", np.ones(3, dtype=np.float32))
    opt = optim.Adam([p], lr=0.1)
    p.grad[:] = 1
    opt.step()
    p.data, p.grad = p.data.astype(np.float64), np.ones(3)  # what Layer.astype does
    opt.step()
    assert p.data.dtype == np.float64 and opt.state[0]["exp_avg"].dtype == np.float64


def test_get_by_name_and_bad_arguments():
    p = [Parameter("w", np.zeros(3, dtype=np.float32))]
    assert isinstance(optim.get("adam", p, lr=0.01), optim.Adam) and optim.get("Adam", p).lr == 1e-3
    assert isinstance(optim.get("sgd", p, lr=0.1, momentum=0.9), optim.SGD)
    for name, cls in [("adagrad", optim.AdaGrad), ("rmsprop", optim.RMSProp), ("adamw", optim.AdamW)]:
        assert type(optim.get(name, p)) is cls
    with pytest.raises(ValueError, match="unknown optimizer 'lbfgs'"):
        optim.get("lbfgs", p)
    with pytest.raises(ValueError, match="empty parameter list"):
        optim.Adam([])
    with pytest.raises(ValueError, match="betas"):
        optim.Adam(p, betas=(0.9, 1.0))
    with pytest.raises(ValueError, match="nesterov"):
        optim.SGD(p, lr=0.1, nesterov=True)
    with pytest.raises(TypeError, match="Parameter"):
        optim.SGD([np.zeros(3)], lr=0.1)


def test_clip_grad_norm_pytorch_semantics():
    r = np.random.default_rng(1)
    params = [Parameter("a", np.zeros((3, 4))), Parameter("b", np.zeros(5))]
    grads = [r.normal(size=(3, 4)), r.normal(size=5)]
    for p, g in zip(params, grads):
        p.grad[...] = g
    total = math.sqrt(sum((g ** 2).sum() for g in grads))
    assert optim.clip_grad_norm(params, 1.0) == pytest.approx(total)
    coef = 1.0 / (total + 1e-6)
    for p, g in zip(params, grads):
        np.testing.assert_allclose(p.grad, g * coef)
    new_total = math.sqrt(sum((p.grad ** 2).sum() for p in params))
    assert new_total == pytest.approx(1.0, rel=1e-5)
    # below the limit nothing changes
    before = [p.grad.copy() for p in params]
    assert optim.clip_grad_norm(params, 10.0) == pytest.approx(new_total)
    for p, b in zip(params, before):
        np.testing.assert_array_equal(p.grad, b)
    # infinity norm
    params[0].grad[0, 0] = -7.0
    assert optim.clip_grad_norm(params, 1.0, norm_type=math.inf) == 7.0
    assert np.abs(params[0].grad).max() == pytest.approx(1.0, rel=1e-5)


def test_clip_weights():
    p = Parameter("w", np.array([-3.0, -0.01, 0.0, 0.02, 5.0], dtype=np.float32))
    optim.clip_weights([p], 0.01)
    np.testing.assert_array_equal(p.data, np.array([-0.01, -0.01, 0.0, 0.01, 0.01], dtype=np.float32))


@pytest.mark.parametrize("decoupled", [False, True])
def test_float32_adam_computes_in_float32_like_torch(decoupled):
    """A float32 Adam step is torch.optim.Adam's float32 arithmetic, op for op (scalars cast to
    float32 first), not float64 arithmetic rounded at the end: within one ulp of a float32
    replay of torch's single-tensor kernel over 2,000 values and 5 steps."""
    from fastnn import _core

    f32 = np.float32
    r = np.random.default_rng(3)
    n, lr, b1, b2, eps, wd = 2000, 1e-2, 0.9, 0.999, 1e-8, 0.1
    p = r.normal(size=n).astype(f32)
    m, v = np.zeros(n, f32), np.zeros(n, f32)
    q, mq, vq = p.copy(), m.copy(), v.copy()
    for t in range(1, 6):
        g = r.normal(size=n).astype(f32)
        _core.adam_update(p, g, m, v, lr, b1, b2, eps, wd, t, decoupled)
        if decoupled:
            q = q * f32(1 - lr * wd)
            gq = g
        else:
            gq = g + f32(wd) * q
        w = f32(1 - b1)
        mq = mq + w * (gq - mq)  # torch.lerp with weight < 0.5
        vq = f32(b2) * vq + f32(1 - b2) * gq * gq
        denom = np.sqrt(vq) / f32(math.sqrt(1 - b2 ** t)) + f32(eps)
        q = q - f32(lr / (1 - b1 ** t)) * (mq / denom)
        assert p.dtype == m.dtype == v.dtype == np.float32
        ulp = np.spacing(np.abs(q))
        assert np.max(np.abs(p - q) / ulp) <= 1.0, f"step {t}"
        np.testing.assert_array_equal(v, vq)


@pytest.mark.parametrize("name", ["sgd", "sgd-nesterov", "adagrad", "rmsprop"])
def test_float32_sgd_adagrad_rmsprop_compute_in_float32_like_torch(name):
    """As Adam's: a float32 step is torch.optim's float32 arithmetic op for op (scalars cast to
    float32, addcdiv's g / denom before the scaling), within one ulp of a float32 replay."""
    from fastnn import _core

    f32 = np.float32
    r = np.random.default_rng(5)
    n, wd = 2000, 0.1
    p = r.normal(size=n).astype(f32)
    state = np.zeros(n, f32)
    q, sq = p.copy(), state.copy()
    for t in range(1, 6):
        g = r.normal(size=n).astype(f32)
        gq = g + f32(wd) * q
        if name.startswith("sgd"):
            nesterov = name == "sgd-nesterov"
            _core.sgd_update(p, g, state, 0.05, 0.9, 0.0 if nesterov else 0.1, nesterov, wd, t == 1)
            sq = gq if t == 1 else f32(0.9) * sq + f32(1.0 if nesterov else 0.9) * gq
            q = q - f32(0.05) * (gq + f32(0.9) * sq if nesterov else sq)
        elif name == "adagrad":
            _core.adagrad_update(p, g, state, 0.1, 0.05, wd, 1e-10, t)
            sq = sq + gq * gq
            q = q - f32(0.1 / (1 + (t - 1) * 0.05)) * (gq / (np.sqrt(sq) + f32(1e-10)))
        else:
            _core.rmsprop_update(p, g, state, 0.01, 0.9, 1e-8, wd)
            sq = f32(0.9) * sq + f32(1 - 0.9) * gq * gq
            q = q - f32(0.01) * (gq / (np.sqrt(sq) + f32(1e-8)))
        assert p.dtype == state.dtype == q.dtype == sq.dtype == np.float32
        ulp = np.spacing(np.abs(q))
        assert np.max(np.abs(p - q) / ulp) <= 1.0, f"step {t}"
        np.testing.assert_array_equal(state, sq)


FAST_STEP_OPTIMIZERS = [
    lambda ps: optim.Adam(ps, lr=0.05, weight_decay=0.01),
    lambda ps: optim.AdamW(ps, lr=0.05),
    lambda ps: optim.SGD(ps, lr=0.05),
    lambda ps: optim.SGD(ps, lr=0.05, momentum=0.9, dampening=0.1, weight_decay=0.01),
    lambda ps: optim.SGD(ps, lr=0.05, momentum=0.9, nesterov=True),
    lambda ps: optim.AdaGrad(ps, lr=0.05, lr_decay=0.1, weight_decay=0.01),
    lambda ps: optim.RMSProp(ps, lr=0.01, alpha=0.9, weight_decay=0.01),
]


@pytest.mark.parametrize("make", FAST_STEP_OPTIMIZERS)
def test_step_validates_once_and_equals_the_checked_update(make):
    # Optimizer.step calls the compiled kernel on views bound when _prepare checks a parameter
    # (again only when one of its arrays is replaced); its updates are bitwise those of the
    # checked _core update, which step takes when that is swapped out (the benchmarks' NumPy
    # reference path), through lr changes, a replaced data array, a dtype change and a reload
    def params():
        r = np.random.default_rng(1)
        return [Parameter("a", r.normal(size=(3, 4)).astype(np.float32)),
                Parameter("b", r.normal(size=5).astype(np.float32))]

    fast_params, slow_params = params(), params()
    fast, slow = make(fast_params), make(slow_params)
    name = fast._core_update
    checked = getattr(_core, name)
    calls = []

    def run_checked(opt):
        setattr(_core, name, lambda *a: calls.append(a) or checked(*a))
        try:
            opt.step()
        finally:
            setattr(_core, name, checked)

    for step in range(8):
        for ps, opt, run in ((fast_params, fast, type(fast).step), (slow_params, slow, run_checked)):
            if step == 3:
                opt.lr = 0.01
            if step == 4:
                for p in ps:
                    p.data = p.data.copy()
            if step == 5:
                for p in ps:
                    p.data, p.grad = p.data.astype(np.float64), p.grad.astype(np.float64)
            if step == 6:
                opt.load_state_dict(opt.state_dict())
            opt.zero_grad()
            for p in ps:
                p.grad += quadratic_grad(p.data, step).astype(p.data.dtype)
            run(opt)
        for a, b in zip(fast_params, slow_params):
            np.testing.assert_array_equal(a.data, b.data)
    assert len(calls) == 8 * 2  # the checked run went through _core's update every time


@pytest.mark.parametrize("make", FAST_STEP_OPTIMIZERS)
def test_step_checks_arrays_replaced_between_steps(make):
    # Optimizer._prepare checks a parameter again only when one of its arrays is replaced or
    # its data made read-only: those are caught at the next step
    p = Parameter("w", np.ones((2, 3), dtype=np.float32))
    opt = make([p])
    name = type(opt).__name__
    p.grad[:] = 1
    opt.step()
    p.grad = np.ones(4, np.float32)
    with pytest.raises(ValueError, match=f"{name}: parameter 'w' has data"):
        opt.step()
    p.grad = np.ones((2, 3), np.float32)
    p.data.flags.writeable = False
    with pytest.raises(ValueError, match=f"{name}: parameter 'w' .* writeable"):
        opt.step()
    p.data.flags.writeable = True
    opt.step()


def test_adam_step_checks_its_hyperparameters_every_step():
    p = Parameter("w", np.ones((2, 3), dtype=np.float32))
    opt = optim.Adam([p], lr=0.1)
    opt.step()
    opt.lr = "fast"
    with pytest.raises(TypeError, match="Adam: lr must be a number"):
        opt.step()

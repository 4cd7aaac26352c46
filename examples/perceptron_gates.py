"""Perceptron logic gates (note 003): AND, NAND and OR are one perceptron each; XOR needs two layers.

A perceptron is ``y = step(b + w1 x1 + w2 x2)`` with ``step(a) = 1`` for ``a > 0`` else 0
(``fastnn.layers.Step``): a ``Dense(2, 1)`` followed by ``Step``. Three things are shown:

1. The note's hand-set weights: AND (0.5, 0.5, -0.7), NAND (-0.5, -0.5, 0.7), OR (0.5, 0.5, -0.2).
2. The perceptron learning rule ``w += lr * (t - y) * x`` learns AND, NAND and OR from their
   truth tables, and never gets XOR right: XOR is not linearly separable, so no single line
   splits its inputs (the rule cycles; the best a line can do is 3 of 4).
3. XOR from two layers: ``AND(NAND(x), OR(x))`` with the hand-set gates, and a two-layer net with
   sigmoid hidden units trained by backpropagation (the step has no gradient, so
   ``Step.backward`` raises; the trained net is thresholded with ``Step`` only at the end).

Bar: every single-layer gate right on all 4 inputs (hand-set and learned); the single-layer
perceptron at most 3 of 4 on XOR after every epoch; both two-layer XORs 4 of 4.

    python examples/perceptron_gates.py
"""
import numpy as np

import fastnn as fnn
from fastnn import layers as L

INPUTS = np.array([[0, 0], [1, 0], [0, 1], [1, 1]], dtype=np.float64)
TRUTH = {"AND": [0, 0, 0, 1], "NAND": [1, 1, 1, 0], "OR": [0, 1, 1, 1], "XOR": [0, 1, 1, 0]}
HAND_SET = {"AND": (0.5, 0.5, -0.7), "NAND": (-0.5, -0.5, 0.7), "OR": (0.5, 0.5, -0.2)}


def perceptron(w1, w2, b):
    """Dense(2, 1) with the given weight and bias, then the step function."""
    model = fnn.Sequential(L.Dense(2, 1), L.Step()).astype(np.float64)
    model.layers[0].load_state_dict({"weight": np.array([[w1, w2]]), "bias": np.array([b])})
    return model


def outputs(model, x=INPUTS):
    return model.forward(x, training=False).ravel().astype(int).tolist()


def perceptron_rule(target, epochs=20, lr=0.1):
    """Rosenblatt's rule on the 4 truth-table rows; returns the model and the number right
    after each epoch."""
    w, b = np.zeros(2), 0.0
    target = np.asarray(target, dtype=np.float64)
    model = perceptron(0.0, 0.0, 0.0)
    right = []
    for _ in range(epochs):
        for x, t in zip(INPUTS, target):
            y = float(w @ x + b > 0)
            w += lr * (t - y) * x
            b += lr * (t - y)
        model.layers[0].load_state_dict({"weight": w[None].copy(), "bias": np.array([b])})
        right.append(int(np.sum(np.array(outputs(model)) == target)))
    return model, right


def backprop_xor(seed=0, epochs=2000, hidden=4):
    """Dense 2-4-1 with Sigmoid units, trained by gradient descent on the 4 XOR rows."""
    fnn.seed(seed)
    net = fnn.Sequential(L.Dense(2, hidden), L.Sigmoid(), L.Dense(hidden, 1)).astype(np.float64)
    net.fit(INPUTS, np.array(TRUTH["XOR"], dtype=np.float64)[:, None], loss="bce_with_logits",
            optimizer=fnn.optim.Adam(net.parameters(), lr=0.05), epochs=epochs, batch_size=4,
            shuffle=False, verbose=0)
    # the decision: logit > 0, i.e. the step function on the trained net's output
    return fnn.Sequential(*net.layers, L.Step()).astype(np.float64)


def main(epochs=20, xor_epochs=2000, seed=0, verbose=True):
    results = {}
    for gate, weights in HAND_SET.items():
        results[f"hand_{gate}"] = outputs(perceptron(*weights)) == TRUTH[gate]
    for gate in ("AND", "NAND", "OR"):
        _, right = perceptron_rule(TRUTH[gate], epochs)
        results[f"learned_{gate}"] = right[-1] == 4
    _, xor_right = perceptron_rule(TRUTH["XOR"], epochs)
    results["single_layer_xor_best"] = max(xor_right)
    nand, or_ = perceptron(*HAND_SET["NAND"]), perceptron(*HAND_SET["OR"])
    hidden = np.hstack([nand.forward(INPUTS), or_.forward(INPUTS)])
    results["two_layer_xor"] = outputs(perceptron(*HAND_SET["AND"]), hidden) == TRUTH["XOR"]
    results["backprop_xor"] = outputs(backprop_xor(seed, xor_epochs)) == TRUTH["XOR"]
    results["bar_met"] = (all(results[k] for k in results if k.startswith(("hand_", "learned_")))
                          and results["single_layer_xor_best"] <= 3
                          and results["two_layer_xor"] and results["backprop_xor"])
    if verbose:
        for gate in ("AND", "NAND", "OR"):
            print(f"{gate:4s}: hand-set {outputs(perceptron(*HAND_SET[gate]))}, learned by the "
                  f"perceptron rule: {'all 4 right' if results['learned_' + gate] else 'WRONG'}")
        print(f"XOR : one perceptron gets at most {results['single_layer_xor_best']} of 4 "
              f"(not linearly separable); AND(NAND, OR): "
              f"{'4 of 4' if results['two_layer_xor'] else 'WRONG'}; 2-4-1 sigmoid net by "
              f"backprop: {'4 of 4' if results['backprop_xor'] else 'WRONG'}")
        print(f"bar (every gate right, XOR only with two layers): "
              f"{'met' if results['bar_met'] else 'MISSED'}")
    return results


if __name__ == "__main__":
    fnn.set_num_threads(1)
    main()

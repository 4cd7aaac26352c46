"""A small ResNet on the 8x8 digits, written as a graph model (``fnn.Input`` / ``fnn.Model``).

Each residual block adds its convolution path to a shortcut with ``L.Add``: the identity where
the block keeps the shape, a strided 1x1 convolution with batch norm (the projection shortcut)
where it doubles the width and halves the resolution, which ``L.Residual`` cannot express:

    Conv3x3(1->16)-BN-ReLU                                           8x8
    block1: relu(BN(Conv3x3(relu(BN(Conv3x3 x)))) + x)               8x8, 16 channels
    block2: the same with stride 2 + Conv1x1(stride 2)-BN shortcut   4x4, 32 channels
    block3: identity shortcut                                        4x4, 32 channels
    AdaptiveAvgPool2D(1) (global average), Flatten, Dense(32, 10)

Trained with Adam and cosine learning-rate decay on three quarters of the digits, scored on the
held-out quarter. Bar: >= 97% test accuracy. The builders are ``fastnn.recipes.vision.resnet``
and ``residual_block``; ``fastnn train resnet`` trains the same model and saves it. The
``Sequential`` version with identity shortcuts only is ``resnet_digits.py``.

    python examples/resnet_graph_digits.py
"""
import argparse

import fastnn as fnn
from fastnn.recipes.vision import RESNET_BAR, train_resnet


def main(epochs=10, seed=0, verbose=True):
    model, metrics = train_resnet(epochs=epochs, seed=seed, verbose=2 if verbose else 0)
    print(f"graph ResNet ({metrics['parameters']:,} parameters): test accuracy "
          f"{metrics['test_accuracy']:.4f} on {metrics['test_digits']} held-out digits; bar >= "
          f"{RESNET_BAR}: {'met' if metrics['bar_met'] else 'MISSED'} ({metrics['seconds']:.1f} s)")
    if verbose:
        model.summary()
    return metrics


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    # batches of 32 tiny digits are too small to share between threads
    fnn.set_num_threads(1)
    main(epochs=args.epochs, seed=args.seed)

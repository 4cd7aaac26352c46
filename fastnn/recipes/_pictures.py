"""Where ``fastnn train`` puts its pictures: ``PREFIX-curves.png``, ``PREFIX-samples.png``, ...
beside the checkpoint (``PREFIX`` is the checkpoint's path without ``.npz``)."""
from .._imaging import save_image_grid, save_training_curves


def picture(plots, what):
    """The path of picture ``what`` for the prefix ``plots``, or None when pictures are off."""
    return f"{plots}-{what}.png" if plots else None


def curves(plots, history, title, groups=()):
    path = picture(plots, "curves")
    if path:
        save_training_curves(history, path, title=title, groups=groups)
        print(f"saved training curves to {path}")


def grid(plots, what, images, description, **kwargs):
    path = picture(plots, what)
    if path:
        save_image_grid(images, path, **kwargs)
        print(f"saved {description} to {path}")

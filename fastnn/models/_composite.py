"""State of a model made of named sub-models (a VAE's encoder/decoder, a GAN's two networks)."""


class CompositeState:
    """``state_dict``/``load_state_dict`` over the sub-models named in ``_parts``: each key is
    ``"<part>.<the part's own key>"``, as ``torch.nn.Module`` nests its children."""

    _parts = ()

    def _state_owner(self):
        return getattr(self, "_name", type(self).__name__)

    def state_dict(self):
        return {f"{part}.{key}": value for part in self._parts
                for key, value in getattr(self, part).state_dict().items()}

    def load_state_dict(self, state_dict):
        split = {part: {} for part in self._parts}
        for key, value in state_dict.items():
            head, _, rest = key.partition(".")
            if head not in split:
                prefixes = " or ".join(f"'{p}.'" for p in self._parts)
                raise KeyError(f"{self._state_owner()}.load_state_dict: unexpected key {key!r} "
                               f"(keys start with {prefixes})")
            split[head][rest] = value
        for part in self._parts:
            getattr(self, part).load_state_dict(split[part])

"""Placeholders that import fine and fail loudly when used."""


def unavailable(name: str):
    def stub(*args, **kwargs):
        raise NotImplementedError(f"torchvision.{name} is a stub (benchmarks/peer_stubs): "
                                  "install torchvision to use it")

    stub.__name__ = name.rsplit(".", 1)[-1]
    return stub

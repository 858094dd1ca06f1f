"""torchvision.datasets names that dalle2-pytorch references; none of them is implemented."""

from ._stub import unavailable

ImageFolder = unavailable("datasets.ImageFolder")

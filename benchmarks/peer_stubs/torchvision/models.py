"""torchvision.models names that dalle2-pytorch references; none of them is implemented."""

from ._stub import unavailable

vgg16 = unavailable("models.vgg16")

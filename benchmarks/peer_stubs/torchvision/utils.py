"""torchvision.utils names that dalle2-pytorch references; none of them is implemented."""

from ._stub import unavailable

make_grid = unavailable("utils.make_grid")
save_image = unavailable("utils.save_image")
